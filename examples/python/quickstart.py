# The product page's Quick Start, as written, with the connection details our server prints
# (`ducklake-catalog connect`). Run: CATALOG_HOST=… CATALOG_PORT=… CATALOG_PASSWORD=… python quickstart.py
# Exercised by crates/cli/tests/e2e_python.rs.
import os

import duckdb

host = os.environ.get("CATALOG_HOST", "127.0.0.1")
port = os.environ.get("CATALOG_PORT", "6432")
user = os.environ.get("CATALOG_USER", "admin")
password = os.environ["CATALOG_PASSWORD"]
dbname = os.environ.get("CATALOG_DBNAME", "lakehouse")

conn = duckdb.connect()
conn.execute("INSTALL ducklake; LOAD ducklake;")
conn.execute("INSTALL postgres; LOAD postgres;")
conn.execute("INSTALL httpfs; LOAD httpfs;")

# S3 credentials for data access
conn.execute("""
    CREATE SECRET (TYPE s3, PROVIDER credential_chain);
""")

# Attach the catalog
conn.execute(f"""
    ATTACH 'ducklake:postgres:host={host} 
    port={port} user={user} password={password} dbname={dbname}' AS lake
""")

# Create and query tables
conn.execute("CREATE TABLE lake.events (id INT, name VARCHAR)")
conn.execute("INSERT INTO lake.events VALUES (1, 'signup')")
print(conn.execute("SELECT * FROM lake.events").fetchall())
