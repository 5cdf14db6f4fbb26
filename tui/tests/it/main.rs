//! `idprov-tui`'s integration tests, one test binary (`--test it`): screen
//! snapshots, the event stream's reconnection against a real daemon, and
//! the real binary in tmux.

mod e2e_tmux;
mod e2e_ux;
mod e2e_why;
mod keypress_token;
mod policy_tmux;
mod reconnect;
mod snapshots;
