//! Client connectors: each renders a complete, runnable program for one DuckDB client that
//! ATTACHes a lake served by this catalog.
//!
//! Today: Python (`duckdb` on PyPI). The Go, CLI, Node and Rust connectors, and `connect
//! --lang`, come with the connectors issue; each new one implements [`Connector`].

use catalog_core::connection::ConnectionInfo;

/// A DuckDB client this catalog can be reached from.
pub trait Connector {
    /// The `--lang` name.
    fn language(&self) -> &'static str;
    /// A runnable program that attaches `info`'s lake, creates a table, writes and reads it.
    /// The password is read from the `PGPASSWORD` environment variable, never embedded.
    fn render(&self, info: &ConnectionInfo) -> String;
}

/// Python with the `duckdb` package.
#[derive(Debug, Clone, Copy, Default)]
pub struct Python;

impl Connector for Python {
    fn language(&self) -> &'static str {
        "python"
    }

    fn render(&self, info: &ConnectionInfo) -> String {
        let conninfo = info.conninfo(false);
        let s3 = if info.data_path.starts_with("s3://") {
            "con.execute(\"CREATE SECRET (TYPE s3, PROVIDER credential_chain)\")\n"
        } else {
            ""
        };
        format!(
            "import os\nimport duckdb\n\n\
             # The catalog password comes from PGPASSWORD (libpq reads it).\n\
             assert os.environ.get(\"PGPASSWORD\"), \"set PGPASSWORD to the catalog password\"\n\
             con = duckdb.connect()\n\
             con.execute(\"INSTALL ducklake; LOAD ducklake; INSTALL postgres; LOAD postgres;\")\n\
             {s3}\
             con.execute(\"ATTACH 'ducklake:postgres:{conninfo}' AS {lake}\")\n\
             con.execute(\"CREATE TABLE IF NOT EXISTS {lake}.events (id INT, name VARCHAR)\")\n\
             con.execute(\"INSERT INTO {lake}.events VALUES (1, 'signup')\")\n\
             print(con.execute(\"SELECT count(*) FROM {lake}.events\").fetchone()[0])\n",
            lake = info.lake,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_program_attaches_without_embedding_the_password() {
        let info = ConnectionInfo {
            lake: "lakehouse".into(),
            host: "10.0.0.5".into(),
            port: 5432,
            dbname: "lakehouse".into(),
            user: "admin".into(),
            data_path: "s3://acme/lake/".into(),
            password_source: "test".into(),
            password: Some(catalog_core::Secret::new("hunter2")),
        };
        let program = Python.render(&info);
        assert!(program.contains(
            "ATTACH 'ducklake:postgres:host=10.0.0.5 port=5432 user=admin dbname=lakehouse' AS lakehouse"
        ));
        assert!(program.contains("PROVIDER credential_chain"));
        assert!(!program.contains("hunter2"));
    }
}
