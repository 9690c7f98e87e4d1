//! Backend API tests: a real backend on loopback per test, on SQLite and on
//! Postgres.

mod accounts;
mod admin_mail;
mod api;
mod helpers;
mod lobby;
mod lobby_sweeper;
mod notifications;
mod outage;
mod reaper;
mod runtime;
mod sweep;
mod turns;
