//! What a peer sees when a message is over [`crate::MAX_MESSAGE_BYTES`].
//!
//! tonic rejects such a message with OUT_OF_RANGE, the code Fetch uses for "offset out
//! of range", so a client could take one for the other. Servers answer
//! RESOURCE_EXHAUSTED naming the limit instead: [`OversizeLayer`] rewrites tonic's
//! answer to an oversized unary request, and stream handlers map the status they read
//! with [`is_oversize`].

use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};
use tonic::codegen::{BoxFuture, Service};

use crate::MAX_MESSAGE_BYTES;

/// What tonic's message-size errors say, decoded or encoded.
const TONIC_OVERSIZE: &str = "message length too large";

/// True if `status` is tonic's refusal of a message over the size limit.
pub fn is_oversize(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::OutOfRange && status.message().contains(TONIC_OVERSIZE)
}

/// The message of the RESOURCE_EXHAUSTED answer to an oversized message.
pub fn oversize_message() -> String {
    format!(
        "message larger than the limit of {} MiB; send fewer or smaller batches per request",
        MAX_MESSAGE_BYTES >> 20
    )
}

/// A tower layer for tonic servers that turns tonic's OUT_OF_RANGE answer to an
/// oversized request into RESOURCE_EXHAUSTED naming the limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct OversizeLayer;

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize { inner }
    }
}

/// The service [`OversizeLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Oversize<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for Oversize<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            rewrite(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites a trailers-only oversize answer (unary calls fail that way, before the
/// handler runs) in place.
fn rewrite(headers: &mut HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"11");
    let oversize = headers
        .get("grpc-message")
        .is_some_and(|m| percent_decoded(m.as_bytes()).contains(TONIC_OVERSIZE));
    if !(out_of_range && oversize) {
        return;
    }
    headers.insert("grpc-status", HeaderValue::from_static("8"));
    let message = oversize_message().replace(' ', "%20").replace(';', "%3B");
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
}

/// Decodes the percent-encoding gRPC uses for `grpc-message`.
fn percent_decoded(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversize_answer_becomes_resource_exhausted() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%2070000000%20bytes",
            ),
        );
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "8");
        let message = percent_decoded(headers["grpc-message"].as_bytes());
        assert!(message.contains("limit of 64 MiB"), "{message}");
    }

    #[test]
    fn other_out_of_range_answers_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("offset%2050%20is%20out%20of%20range"),
        );
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "11");
    }
}
