//! A precise HTTP/1.1 client for the measures wrk cannot take: cold starts,
//! deploy-to-first-response, runaway loops, process start to ready, and queue load.
//!
//! - `bench-probe plan ADDR [API_KEY]` reads lines `METHOD PATH [@BODY_FILE]` from stdin, sends
//!   them one after another on one keep-alive connection, and prints `STATUS MICROS` per line.
//! - `bench-probe fan ADDR CONNECTIONS [API_KEY]` reads the same lines and sends them as fast as
//!   it can over CONNECTIONS keep-alive connections at once (one thread each), then prints
//!   `STATUS MICROS BODY` per line in input order (the body on one line; status 0 and the error
//!   when the request failed).
//! - `bench-probe start ADDR [PATH [KEY]] -- COMMAND [ARGS…]` spawns the command and prints the
//!   microseconds until `GET PATH` (default `/health`) on ADDR first answers 200, then kills it.
//!
//! Blocking std sockets only, so the client adds a few microseconds, not a runtime's worth.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const USAGE: &str = "usage: bench-probe plan ADDR [KEY] | fan ADDR CONNECTIONS [KEY] \
                     | start ADDR [PATH [KEY]] -- COMMAND…";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plan") if args.len() >= 2 => plan(&args[1], args.get(2).map(String::as_str)),
        Some("fan") if args.len() >= 3 => match args[2].parse::<usize>() {
            Ok(connections) if connections > 0 => {
                fan(&args[1], connections, args.get(3).map(String::as_str))
            }
            _ => Err(USAGE.to_owned()),
        },
        Some("start") => match args.iter().position(|a| a == "--") {
            Some(dash) if (2..=4).contains(&dash) && dash + 1 < args.len() => {
                let path = args
                    .get(2)
                    .filter(|_| dash > 2)
                    .map_or("/health", String::as_str);
                let key = args.get(3).filter(|_| dash > 3).map(String::as_str);
                start(&args[1], path, key, &args[dash + 1..])
            }
            _ => Err(USAGE.to_owned()),
        },
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-probe: {message}");
            ExitCode::FAILURE
        }
    }
}

fn plan(addr: &str, key: Option<&str>) -> Result<(), String> {
    let mut client = Client::new(addr, key);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut words = line.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        let body = match words.next().and_then(|w| w.strip_prefix('@')) {
            Some(file) => std::fs::read(file).map_err(|e| format!("{file}: {e}"))?,
            None => Vec::new(),
        };
        let started = Instant::now();
        let (status, _) = client.send(method, path, &body)?;
        println!("{status} {}", started.elapsed().as_micros());
    }
    Ok(())
}

/// One line of a `fan` plan: method, path and the body file (empty when none).
struct Planned {
    method: String,
    path: String,
    body: String,
}

/// What one request of a `fan` plan got: status (0 when it failed), micros and body.
type Outcome = (u16, u128, Vec<u8>);

fn fan(addr: &str, connections: usize, key: Option<&str>) -> Result<(), String> {
    let mut plan = Vec::new();
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::from([(String::new(), Vec::new())]);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut words = line.split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        let body = words
            .next()
            .and_then(|w| w.strip_prefix('@'))
            .unwrap_or_default()
            .to_owned();
        if !bodies.contains_key(&body) {
            let bytes = std::fs::read(&body).map_err(|e| format!("{body}: {e}"))?;
            bodies.insert(body.clone(), bytes);
        }
        plan.push(Planned {
            method: method.to_owned(),
            path: path.to_owned(),
            body,
        });
    }

    // Each connection takes the next request off the plan until none is left.
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<Option<Outcome>> = (0..plan.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections.min(plan.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut client = Client::new(addr, key);
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(request) = plan.get(i) else {
                            return done;
                        };
                        let body = bodies.get(&request.body).map_or(&[][..], Vec::as_slice);
                        let started = Instant::now();
                        let outcome = match client.send(&request.method, &request.path, body) {
                            Ok((status, text)) => (status, started.elapsed().as_micros(), text),
                            Err(e) => (0, started.elapsed().as_micros(), e.into_bytes()),
                        };
                        done.push((i, outcome));
                    }
                })
            })
            .collect();
        for worker in workers {
            for (i, outcome) in worker.join().unwrap_or_default() {
                outcomes[i] = Some(outcome);
            }
        }
    });

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for outcome in outcomes {
        let (status, micros, body) =
            outcome.unwrap_or_else(|| (0, 0, b"not sent: a connection thread died".to_vec()));
        let body = String::from_utf8_lossy(&body).replace(['\r', '\n'], " ");
        writeln!(out, "{status} {micros} {body}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn start(addr: &str, path: &str, key: Option<&str>, command: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .map_err(|e| format!("{}: {e}", command[0]))?;
    let ready = loop {
        if let Ok((200, _)) = Client::new(addr, key).send("GET", path, &[]) {
            break Some(started.elapsed());
        }
        if started.elapsed() > START_TIMEOUT || matches!(child.try_wait(), Ok(Some(_))) {
            break None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    match ready {
        Some(elapsed) => {
            println!("{}", elapsed.as_micros());
            Ok(())
        }
        None => Err(format!("the server never answered {path} with 200")),
    }
}

/// One keep-alive connection, reopened when the server closes it.
struct Client<'a> {
    addr: &'a str,
    key: Option<&'a str>,
    stream: Option<BufReader<TcpStream>>,
}

impl<'a> Client<'a> {
    fn new(addr: &'a str, key: Option<&'a str>) -> Self {
        Self {
            addr,
            key,
            stream: None,
        }
    }

    /// Sends one request; returns the status and the body of the response.
    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(key) = self.key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        head.push_str("\r\n");

        let reader = match self.stream.take() {
            Some(reader) => reader,
            None => {
                let stream = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                BufReader::new(stream)
            }
        };
        let mut reader = reader;
        let stream = reader.get_mut();
        stream
            .write_all(&[head.as_bytes(), body].concat())
            .map_err(|e| e.to_string())?;

        let (status, keep, body) = read_response(&mut reader)?;
        if keep {
            self.stream = Some(reader);
        }
        Ok((status, body))
    }
}

/// Reads one response; returns its status, whether the connection stays open, and its body.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool, Vec<u8>), String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;

    let mut length = 0usize;
    let mut chunked = false;
    let mut keep = true;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| "bad content-length")?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }

    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk size")?;
            read_into(reader, &mut body, size + 2)?;
            body.truncate(body.len() - 2);
            if size == 0 {
                break;
            }
        }
    } else {
        read_into(reader, &mut body, length)?;
    }
    Ok((status, keep, body))
}

/// Appends exactly `bytes` bytes from the connection to `body`.
fn read_into(
    reader: &mut BufReader<TcpStream>,
    body: &mut Vec<u8>,
    bytes: usize,
) -> Result<(), String> {
    let start = body.len();
    body.resize(start + bytes, 0);
    reader
        .read_exact(&mut body[start..])
        .map_err(|e| e.to_string())
}
