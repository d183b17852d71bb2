// A DuckLake client in Go: ATTACH a lake served by ducklake-catalog, write Parquet and inlined
// rows, update, time travel, list snapshots. `ducklake-catalog connect --lang go` prints this
// program with your server's settings as the defaults below.
//
// Run: PGPASSWORD=… go run .
package main

import (
	"database/sql"
	"fmt"
	"log"
	"os"

	_ "github.com/duckdb/duckdb-go/v2"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	host := env("CATALOG_HOST", "127.0.0.1")
	port := env("CATALOG_PORT", "6432")
	user := env("CATALOG_USER", "admin")
	lake := env("CATALOG_LAKE", "lakehouse")
	sslmode := env("CATALOG_SSLMODE", "require")
	storage := env("CATALOG_STORAGE", "s3") // s3 | local: where the lake's data path is
	s3Endpoint := env("CATALOG_S3_ENDPOINT", "") // host:port of an S3-compatible store; empty for AWS
	s3Region := env("CATALOG_S3_REGION", "us-east-1")
	s3UseSSL := env("CATALOG_S3_USE_SSL", "true")
	poolMax := env("CATALOG_POOL_MAX", "16") // catalog connections per attached lake
	const table = "lake.example_go"

	// The catalog password comes from PGPASSWORD: libpq, inside DuckDB's postgres extension, reads it.
	setup := []string{"INSTALL ducklake", "LOAD ducklake", "INSTALL postgres", "LOAD postgres"}
	if storage == "s3" {
		secret := "CREATE SECRET (TYPE s3, PROVIDER credential_chain"
		if s3Endpoint != "" {
			secret += fmt.Sprintf(", REGION '%s', ENDPOINT '%s', URL_STYLE 'path', USE_SSL %s", s3Region, s3Endpoint, s3UseSSL)
		}
		setup = append(setup, "INSTALL httpfs", "LOAD httpfs", secret+")")
	}
	// Behind the connection pooler: commits retry on conflicts, each attached lake keeps a bounded
	// pool that waits instead of growing, and no health-check query runs before each use
	// (docs/connections.md has the figures).
	setup = append(setup,
		"SET ducklake_max_retry_count = 100",
		"SET pg_pool_acquire_mode = 'wait'",
		"SET pg_pool_max_connections = "+poolMax,
		"SET pg_pool_health_check_query = ''",
	)
	setup = append(setup, fmt.Sprintf(
		"ATTACH 'ducklake:postgres:host=%s port=%s user=%s dbname=%s sslmode=%s' AS lake",
		host, port, user, lake, sslmode))

	work := []string{
		"DROP TABLE IF EXISTS " + table,
		"CREATE TABLE " + table + " (id BIGINT, name VARCHAR, amount BIGINT)",
		// 1,000 rows: more than DuckLake inlines, so they are written as Parquet to the data path.
		"INSERT INTO " + table + " SELECT i, 'item ' || i, i FROM range(1000) t(i)",
		// A few rows: small inserts are inlined into the catalog until a flush.
		"INSERT INTO " + table + " VALUES (1000, 'a', 1), (1001, 'b', 1), (1002, 'c', 1)",
		"SET VARIABLE before_update = (SELECT max(snapshot_id) FROM ducklake_snapshots('lake'))",
		"UPDATE " + table + " SET amount = amount + 100 WHERE id < 10",
	}
	summary := `SELECT to_json({
    'rows': (SELECT count(*) FROM ` + table + `),
    'data_files': (SELECT count(*) FROM ducklake_list_files('lake', 'example_go')),
    'sum_before_update': (SELECT sum(amount) FROM ` + table + ` AT (VERSION => getvariable('before_update'))),
    'sum_now': (SELECT sum(amount) FROM ` + table + `),
    'snapshots': (SELECT count(*) FROM ducklake_snapshots('lake')),
    'latest_snapshots': (SELECT list({'id': snapshot_id, 'changes': changes} ORDER BY snapshot_id DESC)[1:3] FROM ducklake_snapshots('lake'))
})::VARCHAR`

	db, err := sql.Open("duckdb", "")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	// One connection: SET VARIABLE and the attached lake belong to the connection.
	db.SetMaxOpenConns(1)
	for _, stmt := range append(setup, work...) {
		if _, err := db.Exec(stmt); err != nil {
			log.Fatalf("%s: %v", stmt, err)
		}
	}
	var result string
	if err := db.QueryRow(summary).Scan(&result); err != nil {
		log.Fatal(err)
	}
	fmt.Println(result)
}
