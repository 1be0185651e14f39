//! The dashboard's script, style sheet and icon, compiled into taskd. Their URLs carry a
//! hash of their contents, so browsers may keep them for good and still never run an old
//! script against a new page.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The mark in the page header (the icon, drawn inline so it follows the text colour).
pub const LOGO: &str = r#"<svg class="logo" viewBox="0 0 16 16" width="20" height="20" aria-hidden="true"><rect x="1" y="2" width="14" height="3" rx="1"/><rect x="1" y="6.5" width="10" height="3" rx="1"/><rect x="1" y="11" width="6" height="3" rx="1"/></svg>"#;

/// FNV-1a of `bytes`, at compile time.
const fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const VERSION: u64 = fnv(APP_JS.as_bytes()) ^ fnv(APP_CSS.as_bytes()) ^ fnv(ICON_SVG.as_bytes());

/// The URL of the asset `name`, with the contents' version.
pub fn url(name: &str) -> String {
    format!("/ui/assets/{name}?v={VERSION:016x}")
}

/// `GET /ui/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
