//! Paged lists: a bare JSON array, and a `Link: <...>; rel="next"` header when there is more.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use domain::Cursor;
use serde::Serialize;

/// A page of a list: `200` with the items, and the `Link` header when the page says there is
/// more.
pub fn page<T: Serialize>(req: &HttpRequest, page: app::Page<T>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if let Some(link) = page.next.as_ref().and_then(|c| next_link(req, c)) {
        response.insert_header((header::LINK, link));
    }
    response.json(page.items)
}

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
