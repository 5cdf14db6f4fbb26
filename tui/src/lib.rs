//! idprov-tui: the administrator's terminal UI for idprovd.
//!
//! The crate keeps state apart from drawing (the gitui pattern):
//! - [`app`] holds the state and changes it in response to keys and to
//!   [`msg::Msg`]s from the daemon side; it emits [`msg::Command`]s and does no
//!   I/O, so its logic is tested directly;
//! - [`ui`] draws a frame from that state (snapshot-tested on ratatui's
//!   `TestBackend`);
//! - [`daemon`] runs commands against the admin API through
//!   `idprov-admin-client` and keeps the event stream connected;
//! - [`keymap`] is the single table of keys, from which both key handling and
//!   the `?` help are derived.
//!
//! The TUI never opens the database: everything goes through the daemon.

pub mod alerts;
pub mod app;
pub mod cli;
pub mod daemon;
pub mod keymap;
pub mod list;
pub mod msg;
pub mod policy;
pub mod rows;
pub mod synthetic;
pub mod text;
pub mod ui;
