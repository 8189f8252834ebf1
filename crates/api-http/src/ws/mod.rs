//! The WebSocket API at `/api/v1/ws/{client_id}`: live events by channel, replay from the log
//! with `since`, and the same credentials and visibility rules as every other request.

mod connect;
mod delivery;
mod hub;
mod protocol;
mod replay;
mod session;
mod slots;

pub use connect::{__path_connect, connect};
pub use hub::{encode, Delivery, Hub, CATCH_UP_EVERY};
pub use slots::{Connections, WsLimits, PENDING_PER_ADDRESS};

/// Largest message a client may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
