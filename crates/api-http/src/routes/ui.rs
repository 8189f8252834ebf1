//! `/dashboard`: the operators' web UI. Its files are part of the binary (`crates/api-http/ui`),
//! so it works offline and always matches the API it calls; it signs in through the API like
//! any client and reads nothing the caller's role may not.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::endpoint;
use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/dashboard", "GET", |r| {
        r.route(web::get().to(page))
    }))
    .service(endpoint("/dashboard/", "GET", |r| {
        r.route(web::get().to(slash))
    }))
    .service(endpoint("/dashboard/{file}", "GET", |r| {
        r.route(web::get().to(file))
    }));
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file the page loads. Nothing else is served under `/dashboard/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/style.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/vendor/uPlot.min.css"),
    },
];

/// What the page may load and where it may connect: this server only. Scripts and styles come
/// from files (none inline), so an injected string can never run as code.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The page itself (the app routes by the URL's fragment).
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "system",
    responses((status = 200, description = "The web dashboard's page.", body = String, content_type = "text/html")),
    security(())
)]
pub(crate) async fn page(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "index.html")
}

/// The page's address as people also type it: sent on to `/dashboard`.
#[utoipa::path(
    get,
    path = "/dashboard/",
    tag = "system",
    responses((status = 308, description = "To `/dashboard`.")),
    security(())
)]
pub(crate) async fn slash() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/dashboard"))
        .finish()
}

/// One of the page's files (script, styles, the charting library).
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "system",
    params(("file" = String, Path, description = "The file's name, such as `app.js`.")),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such file.", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
pub(crate) async fn file(
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&req, &name)
}

/// The file `name` with its validator: `304` when the browser's copy is current. Browsers must
/// ask each time (`no-cache`), so a new binary's UI is never mixed with an old one's files.
fn serve(req: &HttpRequest, name: &str) -> Result<HttpResponse, ApiError> {
    let (index, asset) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, a)| a.name == name)
        .ok_or_else(|| ApiError::not_found(format!("the dashboard has no file {name:?}")))?;
    let tag = &tags()[index];
    let current = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if current {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, tag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY));
    Ok(if current {
        response.finish()
    } else {
        response.content_type(asset.content_type).body(asset.body)
    })
}

/// Each asset's entity tag, from its bytes.
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut hasher = DefaultHasher::new();
                a.body.hash(&mut hasher);
                format!("\"{:016x}\"", hasher.finish())
            })
            .collect()
    })
}
