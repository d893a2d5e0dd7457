//! A browser stand-in for OAuth flows: keeps cookies, follows redirects one at a time and fills
//! in oidc-provider's development login and consent pages.
//!
//! It stops at the first redirect into the application's `redirect_url` and returns that URL
//! without requesting it, so the application never needs to exist. It reads just enough HTML to
//! find a form's action and the abort link; it runs no scripts and knows no other pages.

use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};

use super::lock;

/// Redirects and page submissions allowed in one flow before giving up.
const MAX_STEPS: usize = 30;

/// What the user does on the consent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// Submit the consent form.
    Grant,
    /// Follow the page's abort link, which ends the flow with `error=access_denied`.
    Refuse,
}

/// A cookie-keeping HTTP client that walks a login flow like a person at a browser.
pub struct Browser {
    http: reqwest::Client,
    stop_at: String,
    trail: std::sync::Mutex<Vec<String>>,
}

enum Step {
    Get(Url),
    Post(Url, Vec<(&'static str, String)>),
}

impl Browser {
    /// A browser with an empty cookie jar that stops at URLs starting with `stop_at`.
    pub fn new(stop_at: &str) -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the browser's HTTP client");
        Self {
            http,
            stop_at: stop_at.to_owned(),
            trail: Default::default(),
        }
    }

    /// Opens `start_url`, signs in as `login` if asked, answers the consent page with `consent`
    /// and returns the URL the flow finally redirects to, query included.
    pub async fn authorize(&self, start_url: &str, login: &str, consent: Consent) -> Url {
        let start = Url::parse(start_url).expect("start URL is absolute");
        let mut step = Step::Get(start);

        for _ in 0..MAX_STEPS {
            let (url, response) = self.perform(step).await;
            let status = response.status();

            if status.is_redirection() {
                let target = redirect_target(&url, &response);
                if target.as_str().starts_with(&self.stop_at) {
                    self.note(format!("stop at {target}"));
                    return target;
                }
                step = Step::Get(target);
                continue;
            }

            let page = response.text().await.expect("read the page");
            if status != StatusCode::OK {
                self.fail(&format!("{status} from {url}:\n{page}"));
            }
            step = self.answer_page(&url, &page, login, consent);
        }
        self.fail(&format!(
            "no redirect to {} after {MAX_STEPS} steps",
            self.stop_at
        ))
    }

    /// The requests made so far, for failure messages.
    pub fn trail(&self) -> Vec<String> {
        lock(&self.trail).clone()
    }

    async fn perform(&self, step: Step) -> (Url, reqwest::Response) {
        let (url, request) = match step {
            Step::Get(url) => {
                self.note(format!("GET {url}"));
                (url.clone(), self.http.get(url))
            }
            Step::Post(url, form) => {
                self.note(format!("POST {url}"));
                (url.clone(), self.http.post(url).form(&form))
            }
        };
        ensure_loopback(&url);

        match request.send().await {
            Ok(response) => (url, response),
            Err(err) => self.fail(&format!("request to {url} failed: {err}")),
        }
    }

    fn answer_page(&self, url: &Url, page: &str, login: &str, consent: Consent) -> Step {
        let action = || {
            let action = form_action(page).unwrap_or_else(|| self.fail("page has no form"));
            url.join(&action).expect("form action is a URL")
        };

        if page.contains(r#"name="prompt" value="login""#) {
            let form = vec![
                ("prompt", "login".to_owned()),
                ("login", login.to_owned()),
                ("password", "any-password".to_owned()),
            ];
            return Step::Post(action(), form);
        }

        if page.contains(r#"name="prompt" value="consent""#) {
            return match consent {
                Consent::Grant => Step::Post(action(), vec![("prompt", "consent".to_owned())]),
                Consent::Refuse => {
                    let href = abort_href(page).unwrap_or_else(|| self.fail("no abort link"));
                    Step::Get(url.join(&href).expect("abort link is a URL"))
                }
            };
        }

        self.fail(&format!("unexpected page at {url}:\n{page}"))
    }

    fn note(&self, line: String) {
        lock(&self.trail).push(line);
    }

    fn fail(&self, message: &str) -> ! {
        panic!("browser: {message}\ntrail:\n{}", self.trail().join("\n"))
    }
}

/// The value of `name` in the URL's query string, decoded.
pub fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn redirect_target(from: &Url, response: &reqwest::Response) -> Url {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("{} from {from} without a Location", response.status()));
    from.join(location)
        .unwrap_or_else(|err| panic!("bad Location {location:?}: {err}"))
}

/// Tests may only talk to this machine; a redirect elsewhere is a bug, not a page to load.
fn ensure_loopback(url: &Url) {
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost" || host == "[::1]" || host.starts_with("127.");
    assert!(loopback, "browser refuses to leave loopback: {url}");
}

/// The `action` of the first `<form>` on the page.
fn form_action(page: &str) -> Option<String> {
    let start = page.find("<form")?;
    let tag_end = start + page[start..].find('>')?;
    attribute(&page[start..tag_end], "action")
}

/// One `<input>` of a page: its `name`, `type` (`text` when absent) and `value` (`""` when
/// absent), entities decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormInput {
    pub name: String,
    pub kind: String,
    pub value: String,
}

/// The opening tag of the first `<form>` on the page, e.g. `<form method="post" action="">`.
pub fn form_tag(page: &str) -> Option<&str> {
    let start = page.to_ascii_lowercase().find("<form")?;
    let end = start + page[start..].find('>')?;
    Some(&page[start..=end])
}

/// The value of attribute `name` in one HTML tag (double, single or no quotes; any case),
/// entities decoded.
pub fn tag_attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(found) = lower[from..].find(&name) {
        let start = from + found;
        from = start + name.len();
        let preceded = start > 0 && bytes[start - 1].is_ascii_whitespace();
        let rest = lower[from..].trim_start();
        if !preceded || !rest.starts_with('=') {
            continue;
        }
        // Offsets in `lower` are valid in `tag`: ASCII lowercasing keeps byte lengths.
        let value_at = tag.len() - rest.len() + 1;
        let value = tag[value_at..].trim_start();
        let raw = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or_default(),
            _ => value
                .split(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
                .next()
                .unwrap_or_default(),
        };
        return Some(decode_entities(raw));
    }
    None
}

/// Every named `<input>` on the page, in document order.
pub fn form_inputs(page: &str) -> Vec<FormInput> {
    let lower = page.to_ascii_lowercase();
    let mut inputs = Vec::new();
    let mut from = 0;
    while let Some(found) = lower[from..].find("<input") {
        let start = from + found;
        let Some(len) = page[start..].find('>') else {
            break;
        };
        let tag = &page[start..=start + len];
        from = start + len;
        let Some(name) = tag_attribute(tag, "name") else {
            continue;
        };
        inputs.push(FormInput {
            name,
            kind: tag_attribute(tag, "type")
                .map_or_else(|| "text".to_owned(), |t| t.to_lowercase()),
            value: tag_attribute(tag, "value").unwrap_or_default(),
        });
    }
    inputs
}

/// The first `href` that ends in `/abort`.
fn abort_href(page: &str) -> Option<String> {
    let mut rest = page;
    while let Some(found) = rest.find("href=\"") {
        rest = &rest[found + "href=\"".len()..];
        let value = decode_entities(&rest[..rest.find('"')?]);
        if value.ends_with("/abort") {
            return Some(value);
        }
    }
    None
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let len = tag[start..].find('"')?;
    Some(decode_entities(&tag[start..start + len]))
}

fn decode_entities(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
