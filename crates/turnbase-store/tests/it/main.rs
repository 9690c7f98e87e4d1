//! Store tests: one suite, run on both backends, plus the schema comparison.

mod accounts;
mod lobby;
mod mail;
mod migrations;
mod notify;
mod runtime;
mod suite;
