//! The mail worker against a real SMTP server (aiosmtpd) and, for faults
//! aiosmtpd cannot produce on demand, a scripted SMTP listener; on SQLite
//! and Postgres.

mod faulty_smtp;
mod smtp;
mod worker;
