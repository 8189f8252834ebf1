//! The `Link: <...>; rel="next"` header of paged lists.

use actix_web::http::header::HeaderValue;
use actix_web::HttpRequest;
use domain::Cursor;

/// The `Link` header pointing at the page after `next`, keeping the request's other parameters.
pub fn next_link(req: &HttpRequest, next: &Cursor) -> Option<HeaderValue> {
    let mut params: Vec<&str> = req
        .query_string()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
        .collect();
    let cursor = format!("cursor={}", next.encode());
    params.push(&cursor);
    HeaderValue::from_str(&format!(
        "<{}?{}>; rel=\"next\"",
        req.path(),
        params.join("&")
    ))
    .ok()
}
