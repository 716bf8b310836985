//! Just enough HTTP for the tests of `cgtrace serve`'s endpoint: a free
//! port, a GET, and the samples of a scrape.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
};

/// A port nothing listens on now.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` with these headers; the status code and the body.
#[must_use]
pub fn get(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of the sample line starting with `series`.
#[must_use]
pub fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The whole scrape of the endpoint on `port`.
#[must_use]
pub fn scrape(port: u16) -> String {
    get(port, "/metrics", "").expect("a scrape").1
}
