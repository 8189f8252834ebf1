//! The API as an attacker sees it (OWASP API Security Top 10, 2023), one module per kind of
//! attack; each refusal has the right status and changes nothing. Attacks through a live
//! WebSocket (connection caps, `since` from the future, bad frames, credentials ending under an
//! open socket, foreign events on the bus) are in `websocket.rs`, and what the real process
//! does (the open-file limit, memory left after sign-ins) in the server's `binary.rs`.
//!
//! - `endpoints`: every endpoint family without credentials, with dead credentials and with
//!   too small a role; a wrong method answered only to known callers; CORS; request deadlines.
//! - `floods`: bursts past the rate limits, made-up credentials, sign-in floods and lockouts.
//! - `input`: smuggled fields, oversized and nested bodies and heads, huge pages, NUL text,
//!   quantities past the largest, bodies sent to actions that take none.
//! - `tokens`: token subjects that try to pass for someone else; users whose tokens must end.

#[path = "../common/mod.rs"]
mod common;

mod endpoints;
mod floods;
mod input;
mod tokens;
