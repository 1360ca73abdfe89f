//! Where SQLite and PostgreSQL differ, one module per concern. Everything else in the store
//! is written once, in the SQL both speak; a statement that needs one of these pieces asks
//! for it with the [`Backend`](crate::Backend) its [`Tx`](crate::Tx) or [`Db`](crate::Db)
//! carries.
//!
//! - [`session`]: what every new connection sets (durability, WAL, foreign keys);
//! - [`migrations`]: the migrations written once per backend, and the migration lock;
//! - [`locks`]: row locks (PostgreSQL locks rows; SQLite's single writer is alone);
//! - [`queue`]: the claim's shape and the enqueue's `NOTIFY`;
//! - [`clock`]: the database's own clock, for judging other processes' heartbeats;
//! - [`text`]: ordering text by code point, as Salesforce does.

pub mod clock;
pub mod locks;
pub mod migrations;
pub mod queue;
pub mod session;
pub mod text;
