//! RFC 9457 problem+json answers, rendered one way for both services: the body of
//! a [`Problem`], its status, `content-type: application/problem+json` and, when
//! the problem says when to retry, `retry-after`.

use common::problem::{Problem, CONTENT_TYPE};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE as CONTENT_TYPE_HEADER, RETRY_AFTER};
use http::{Response, StatusCode};

/// The answer carrying `problem`, in any body type built from bytes.
pub fn response<B: From<Vec<u8>>>(problem: &Problem) -> Response<B> {
    let mut answer = Response::new(B::from(problem.to_json()));
    *answer.status_mut() =
        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    set_headers(answer.headers_mut(), problem);
    answer
}

/// The headers of a problem answer: its media type and `retry-after`.
pub fn set_headers(headers: &mut HeaderMap, problem: &Problem) {
    headers.insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
    if let Some(seconds) = problem.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_media_type_and_retry_after() {
        let p = Problem::unavailable("busy", 3);
        let r: Response<Vec<u8>> = response(&p);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[CONTENT_TYPE_HEADER], CONTENT_TYPE);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["status"], 503);
        let r: Response<Vec<u8>> = response(&Problem::not_found());
        assert!(r.headers().get(RETRY_AFTER).is_none());
    }
}
