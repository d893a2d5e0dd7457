//! The incoming request as this crate sees it: method, target, headers and raw body.
//!
//! Nothing here owns bytes or touches the network. The server borrows what it received into a
//! [`WebhookRequest`] and hands it to `verify`, `handshake` and `describe`. Header names are
//! compared without regard to case, as HTTP requires.

/// A received webhook request, borrowed from the server's own representation.
///
/// `uri` is the request target. For most providers only its query matters (Microsoft Graph
/// sends `validationToken` there), but HubSpot's v3 signature covers the full URL the provider
/// called — scheme, host, path and query — so behind a proxy the server must rebuild it from
/// its public base URL rather than pass the path alone.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The request target: `/path?query`, or the full public URL where HubSpot is concerned.
    pub uri: &'a str,
    /// Headers as received; lookups ignore the case of the name.
    pub headers: &'a [(String, String)],
    /// The body exactly as received. Signatures are checked over these bytes.
    pub body: &'a [u8],
}

impl<'a> WebhookRequest<'a> {
    /// Builds a request from its parts.
    pub fn new(
        method: &'a str,
        uri: &'a str,
        headers: &'a [(String, String)],
        body: &'a [u8],
    ) -> Self {
        Self {
            method,
            uri,
            headers,
            body,
        }
    }

    /// The value of the first header called `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    }

    /// The decoded value of the first query parameter called `name`, if the target has one.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.uri.split_once('?')?;
        let query = query.split('#').next().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
        pairs
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(String, String)> {
        vec![
            ("X-Slack-Signature".into(), "v0=abc".into()),
            ("content-type".into(), "application/json".into()),
        ]
    }

    #[test]
    fn header_lookup_ignores_case() {
        let headers = headers();
        let request = WebhookRequest::new("POST", "/hook", &headers, b"");

        assert_eq!(request.header("x-slack-signature"), Some("v0=abc"));
        assert_eq!(request.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(request.header("x-missing"), None);
    }

    #[test]
    fn query_param_is_percent_decoded() {
        let headers = headers();
        let uri = "/hook?a=1&validationToken=Validation%3A%20Testing+client#frag";
        let request = WebhookRequest::new("POST", uri, &headers, b"");

        assert_eq!(
            request.query_param("validationToken").as_deref(),
            Some("Validation: Testing client")
        );
        assert_eq!(request.query_param("missing"), None);
    }
}
