//! Embedded migrations, named alike for both backends.
//!
//! Each migration runs in its own transaction together with the row that
//! records it in `schema_migrations`, so a migration that fails halfway
//! leaves nothing behind. A recorded checksum catches a landed migration
//! that was edited, and a recorded version this build does not know means
//! the database belongs to a newer Turnbase.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The name operators see: `0001_instance`.
    pub fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }

    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

macro_rules! migrations {
    ($backend:literal: $(($version:literal, $name:literal)),* $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/", $backend, "/", stringify!($version), "_", $name, ".sql")),
        }),*]
    };
}

// The versions are written zero-padded, as in the file names they select.
#[allow(clippy::zero_prefixed_literal)]
pub const SQLITE_MIGRATIONS: &[Migration] = migrations!["sqlite": (0001, "instance"), (0002, "mail"), (0003, "accounts"),
        (0004, "mail_attempt_count"), (0005, "mail_secrets"),
        (0006, "lobby"),
        (0007, "runtime"),
        (0008, "turns"),
        (0009, "notifications")];
#[allow(clippy::zero_prefixed_literal)]
pub const POSTGRES_MIGRATIONS: &[Migration] = migrations!["postgres": (0001, "instance"), (0002, "mail"), (0003, "accounts"),
        (0004, "mail_attempt_count"), (0005, "mail_secrets"),
        (0006, "lobby"),
        (0007, "runtime"),
        (0008, "turns"),
        (0009, "notifications")];

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Labels of the migrations applied by this run, in order.
    pub applied: Vec<String>,
    /// Labels of the migrations that were already there.
    pub already: Vec<String>,
}

/// One row of `schema_migrations`.
pub(crate) struct Applied {
    pub version: i64,
    pub name: String,
    pub checksum: String,
}

/// Checks what is applied against what this build knows, and returns the
/// migrations still to apply.
pub(crate) fn plan<'m>(
    known: &'m [Migration],
    applied: &[Applied],
    report: &mut MigrationReport,
) -> crate::StoreResult<Vec<&'m Migration>> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    for row in applied {
        match known.iter().find(|m| m.version == row.version) {
            Some(m) if m.checksum() != row.checksum => {
                return Err(crate::StoreError::MigrationChanged { name: m.label() });
            }
            Some(m) => report.already.push(m.label()),
            None if row.version > newest_known => {
                return Err(crate::StoreError::SchemaTooNew {
                    applied: format!("{:04}_{}", row.version, row.name),
                    known: known.last().map(Migration::label).unwrap_or_default(),
                });
            }
            None => {
                return Err(crate::StoreError::Unsupported(format!(
                    "migration {:04}_{} is recorded but unknown to this build",
                    row.version, row.name
                )));
            }
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(backend: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations folder exists")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_backends_have_the_same_migrations_and_every_file_is_embedded() {
        let labels = |ms: &[Migration]| -> Vec<String> {
            ms.iter().map(|m| format!("{}.sql", m.label())).collect()
        };
        assert_eq!(labels(SQLITE_MIGRATIONS), labels(POSTGRES_MIGRATIONS));
        assert_eq!(labels(SQLITE_MIGRATIONS), files("sqlite"));
        assert_eq!(labels(POSTGRES_MIGRATIONS), files("postgres"));
        let versions: Vec<i64> = SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected, "versions are consecutive from 1");
    }

    #[test]
    fn plan_detects_edits_and_newer_schemas() {
        let known = SQLITE_MIGRATIONS;
        let mut report = MigrationReport::default();
        let todo = plan(known, &[], &mut report).expect("fresh database");
        assert_eq!(todo.len(), known.len());

        let edited = [Applied {
            version: 1,
            name: "instance".into(),
            checksum: "0".into(),
        }];
        let err = plan(known, &edited, &mut MigrationReport::default()).expect_err("edited");
        assert!(err.to_string().contains("0001_instance"), "{err}");

        let newer = [Applied {
            version: 9999,
            name: "future".into(),
            checksum: "x".into(),
        }];
        let err = plan(known, &newer, &mut MigrationReport::default()).expect_err("newer");
        assert!(
            matches!(err, crate::StoreError::SchemaTooNew { .. }),
            "{err}"
        );
    }
}
