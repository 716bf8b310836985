//! The HTTP endpoint of `cgtrace serve`, on the session's runtime:
//! `/metrics` (OpenMetrics when the scraper asks for it, else the
//! Prometheus text format) and `/healthz` (ready once the probes are
//! attached).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoint serves.
#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<Registry>,
    /// Set once every probe is attached.
    pub ready: Arc<AtomicBool>,
}

/// Binds `address`; the error names it.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, endpoint: Endpoint) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(respond(&endpoint, &request)) }
            });
            // A client that goes away mid-request is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(endpoint: &Endpoint, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            let openmetrics = request
                .headers()
                .get(ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| accept.contains("application/openmetrics-text"));
            let mut text = String::new();
            if prometheus_client::encoding::text::encode(&mut text, &endpoint.registry).is_err() {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PROMETHEUS_TEXT,
                    "encoding failed\n".into(),
                );
            }
            if openmetrics {
                reply(StatusCode::OK, OPENMETRICS, text)
            } else {
                reply(StatusCode::OK, PROMETHEUS_TEXT, prometheus_text(&text))
            }
        }
        "/healthz" => {
            if endpoint.ready.load(Ordering::Relaxed) {
                reply(StatusCode::OK, PROMETHEUS_TEXT, "ready\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PROMETHEUS_TEXT,
                    "attaching probes\n".into(),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            PROMETHEUS_TEXT,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// OpenMetrics text as the Prometheus 0.0.4 text format: without the
/// `# EOF` terminator and the `# UNIT` lines that format lacks, and with a
/// counter's `HELP` and `TYPE` naming its samples (`x_total`), as the
/// older format expects.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn the_prometheus_format_drops_the_openmetrics_terminator() {
        let text =
            "# HELP a A.\n# TYPE a counter\na_total 1\n# HELP b B.\n# TYPE b gauge\nb 2\n# EOF\n";
        assert_eq!(
            prometheus_text(text),
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP b B.\n# TYPE b gauge\nb 2\n"
        );
    }
}
