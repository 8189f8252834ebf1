//! The web dashboard's files: served from the binary at `/dashboard` without credentials, under
//! a policy that lets the page load and connect to nothing but this server, and revalidated
//! (not refetched) by browsers that hold the current copy. (What the page does is tested in a
//! real browser by `cargo xtask dashboard-tests`.)

mod common;

use actix_web::http::Method;
use common::*;

/// `(status, content type, content security policy, entity tag, body)` of a `GET path`.
async fn get<S, B>(
    app: &S,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, String, String, String, String)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let mut request = req(Method::GET, path);
    if let Some(tag) = if_none_match {
        request = request.insert_header(("If-None-Match", tag));
    }
    let response = actix_web::test::call_service(app, request.to_request()).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (kind, policy, tag) = (
        header("content-type"),
        header("content-security-policy"),
        header("etag"),
    );
    let status = response.status().as_u16();
    let body = actix_web::test::read_body(response).await;
    (
        status,
        kind,
        policy,
        tag,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_web::test]
async fn the_dashboard_is_served_from_the_binary_and_loads_nothing_from_elsewhere() {
    let h = Harness::memory();
    let app = service!(h);
    let (status, kind, policy, _, page) = get(&app, "/dashboard", None).await;
    assert_eq!(status, 200, "{page}");
    assert!(kind.starts_with("text/html"), "{kind}");
    // The whole policy, so that a loosened directive ('unsafe-inline', another host) fails.
    const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
        img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
        frame-ancestors 'none'";
    assert_eq!(policy, POLICY);

    // Every file the page names is served from here, with its type, under the same policy.
    let mut files = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in page.split(attribute).skip(1) {
            let target = piece.split('"').next().unwrap();
            if target.starts_with('#') || target.starts_with("data:") {
                continue;
            }
            assert!(
                target.starts_with("/dashboard/"),
                "{target} is not this server's"
            );
            files.push(target.to_owned());
        }
    }
    assert_eq!(files.len(), 4, "{files:?}");
    for file in &files {
        let (status, kind, policy, tag, body) = get(&app, file, None).await;
        assert_eq!(status, 200, "{file}");
        let expected = if file.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(kind.starts_with(expected), "{file}: {kind}");
        assert_eq!(policy, POLICY, "{file}");
        // No script or style reaches for another host.
        for scheme in ["http://", "https://", "ws://", "wss://", "url(", "@import"] {
            let found = body
                .match_indices(scheme)
                .map(|(at, _)| &body[at..(at + 40).min(body.len())])
                // The SVG namespace is a name, not a request; the library's banner is a comment; `url(#…)`
                // points into the page itself.
                .filter(|s| {
                    !s.starts_with("http://www.w3.org/2000/svg")
                        && !s.starts_with("https://github.com/leeoniya/uPlot (v")
                        && !s.starts_with("url(#")
                })
                .collect::<Vec<_>>();
            assert!(found.is_empty(), "{file} names another host: {found:?}");
        }
        // A browser holding the current copy is told so, without the body.
        let (status, _, _, _, body) = get(&app, file, Some(&tag)).await;
        assert_eq!((status, body.as_str()), (304, ""), "{file}");
    }

    let (status, kind, _, _, body) = get(&app, "/dashboard/secrets.txt", None).await;
    assert_eq!(status, 404);
    assert!(
        kind.starts_with("application/problem+json"),
        "{kind}: {body}"
    );
    let (status, _, _, _, _) = get(&app, "/dashboard/..%2F..%2FCargo.toml", None).await;
    assert_eq!(status, 404);
    // The page's routes are open: another method is `405`, not a request for credentials.
    send(&app, req(Method::POST, "/dashboard"))
        .await
        .problem(405);
    send(&app, req(Method::DELETE, "/dashboard/app.js"))
        .await
        .problem(405);
    let (status, _, _, _, _) = get(&app, "/dashboard/", None).await;
    assert_eq!(status, 308);
}
