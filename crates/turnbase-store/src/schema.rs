//! A backend-neutral description of the schema a database ended up with,
//! so that the SQLite and Postgres migrations can be compared: tables,
//! columns with their type class and nullability, indexes and foreign keys.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row as _;

use crate::{Database, StoreResult};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: BTreeMap<String, Column>,
    /// Secondary and unique indexes; the primary key is described by
    /// [`Column::primary_key`].
    pub indexes: BTreeSet<Index>,
    pub foreign_keys: BTreeSet<ForeignKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub class: String,
    pub nullable: bool,
    pub primary_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Index {
    pub columns: Vec<String>,
    pub unique: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references: String,
    pub referenced_columns: Vec<String>,
    pub on_delete: String,
}

/// Maps a declared or reported column type to a class both backends share.
pub fn type_class(declared: &str) -> String {
    let t = declared.trim().to_ascii_lowercase();
    let class = match t.as_str() {
        "uuid" => "uuid",
        "timestamptz" | "timestamp with time zone" => "timestamp",
        "text" | "character varying" | "varchar" => "text",
        "bigint" | "integer" | "int" | "smallint" | "int8" | "int4" => "integer",
        "boolean" | "bool" => "boolean",
        "blob" | "bytea" => "bytes",
        "json" | "jsonb" => "json",
        "real" | "double precision" | "double" | "float8" => "float",
        _ => return format!("other({t})"),
    };
    class.to_string()
}

fn normalize_on_delete(action: &str) -> String {
    match action.to_ascii_uppercase().as_str() {
        "CASCADE" | "C" => "cascade",
        "SET NULL" | "N" => "set null",
        "SET DEFAULT" | "D" => "set default",
        "RESTRICT" | "R" => "restrict",
        _ => "no action",
    }
    .to_string()
}

/// Reads the schema of `db`.
pub async fn describe(db: &Database) -> StoreResult<Schema> {
    match db {
        Database::Sqlite(s) => describe_sqlite(s.reader()).await,
        Database::Postgres(p) => describe_postgres(p.pool()).await,
    }
}

async fn describe_sqlite(pool: &sqlx::SqlitePool) -> StoreResult<Schema> {
    let mut schema = Schema::default();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(pool)
    .await?;
    for name in names {
        let mut table = Table::default();
        for row in sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)")
            .bind(&name)
            .fetch_all(pool)
            .await?
        {
            let declared: String = row.try_get("type")?;
            let not_null: i64 = row.try_get("notnull")?;
            let pk: i64 = row.try_get("pk")?;
            table.columns.insert(
                row.try_get("name")?,
                Column {
                    class: type_class(&declared),
                    nullable: not_null == 0,
                    primary_key: pk > 0,
                },
            );
        }
        for row in sqlx::query("SELECT name, \"unique\", origin FROM pragma_index_list(?)")
            .bind(&name)
            .fetch_all(pool)
            .await?
        {
            let origin: String = row.try_get("origin")?;
            if origin == "pk" {
                continue;
            }
            let index: String = row.try_get("name")?;
            let unique: i64 = row.try_get("unique")?;
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(pool)
                    .await?;
            table.indexes.insert(Index {
                columns,
                unique: unique != 0,
            });
        }
        let mut fks: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for row in sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?
        {
            let id: i64 = row.try_get("id")?;
            let fk = fks.entry(id).or_insert_with(|| ForeignKey {
                columns: Vec::new(),
                references: String::new(),
                referenced_columns: Vec::new(),
                on_delete: String::new(),
            });
            fk.references = row.try_get("table")?;
            fk.columns.push(row.try_get("from")?);
            fk.referenced_columns.push(row.try_get("to")?);
            let on_delete: String = row.try_get("on_delete")?;
            fk.on_delete = normalize_on_delete(&on_delete);
        }
        table.foreign_keys = fks.into_values().collect();
        schema.tables.insert(name, table);
    }
    Ok(schema)
}

async fn describe_postgres(pool: &sqlx::PgPool) -> StoreResult<Schema> {
    let mut schema = Schema::default();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await?;
    for name in names {
        let mut table = Table::default();
        for row in sqlx::query(
            "SELECT c.column_name::text AS name, c.data_type::text AS type,
                    c.is_nullable = 'YES' AS nullable,
                    EXISTS (
                        SELECT 1 FROM information_schema.table_constraints tc
                        JOIN information_schema.key_column_usage k
                          ON k.constraint_name = tc.constraint_name
                         AND k.table_schema = tc.table_schema
                        WHERE tc.table_schema = c.table_schema AND tc.table_name = c.table_name
                          AND tc.constraint_type = 'PRIMARY KEY' AND k.column_name = c.column_name
                    ) AS pk
             FROM information_schema.columns c
             WHERE c.table_schema = current_schema() AND c.table_name = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?
        {
            let declared: String = row.try_get("type")?;
            table.columns.insert(
                row.try_get("name")?,
                Column {
                    class: type_class(&declared),
                    nullable: row.try_get("nullable")?,
                    primary_key: row.try_get("pk")?,
                },
            );
        }
        for row in sqlx::query(
            "SELECT ix.indisunique AS unique,
                    ARRAY(SELECT a.attname::text
                          FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
                          ORDER BY k.ord) AS columns
             FROM pg_index ix
             JOIN pg_class t ON t.oid = ix.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = current_schema() AND t.relname = $1 AND NOT ix.indisprimary",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?
        {
            table.indexes.insert(Index {
                columns: row.try_get("columns")?,
                unique: row.try_get("unique")?,
            });
        }
        for row in sqlx::query(
            "SELECT rt.relname::text AS references,
                    con.confdeltype::text AS on_delete,
                    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                          ORDER BY k.ord) AS columns,
                    ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                          ORDER BY k.ord) AS referenced_columns
             FROM pg_constraint con
             JOIN pg_class t ON t.oid = con.conrelid
             JOIN pg_class rt ON rt.oid = con.confrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE con.contype = 'f' AND n.nspname = current_schema() AND t.relname = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?
        {
            let on_delete: String = row.try_get("on_delete")?;
            table.foreign_keys.insert(ForeignKey {
                columns: row.try_get("columns")?,
                references: row.try_get("references")?,
                referenced_columns: row.try_get("referenced_columns")?,
                on_delete: normalize_on_delete(&on_delete),
            });
        }
        schema.tables.insert(name, table);
    }
    Ok(schema)
}
