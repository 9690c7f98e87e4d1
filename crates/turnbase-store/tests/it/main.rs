//! Store tests: one suite, run on both backends, plus the schema comparison.

mod accounts;
mod mail;
mod migrations;
mod suite;
