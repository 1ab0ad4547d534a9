//! Mail in and out: parsing untrusted MIME into an [`InboundEmail`], the guard that keeps us from
//! answering automated mail, quote stripping, composing threaded replies, and the transports
//! that carry them. Never trusts a header it did not check.

pub mod auth;
pub mod bounce;
pub mod compose;
mod enclosed;
pub mod guard;
pub mod parse;
pub mod policy;
pub mod quote;
pub mod thread;
pub mod transport;

pub use parse::{ParseError, ParsedMail, parse};
