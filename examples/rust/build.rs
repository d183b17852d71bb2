//! Links the official DuckDB library instead of compiling DuckDB (the `bundled` feature does
//! that, slowly): `DUCKDB_LIB_DIR` names the folder holding `libduckdb.so` 1.5.5 (ducklake-catalog
//! ships it beside its binary; the npm package `@duckdb/node-bindings-linux-x64` has it too).
//! The program finds the library there at run time without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    match std::env::var("DUCKDB_LIB_DIR") {
        Ok(dir) if !dir.is_empty() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        _ => panic!(
            "set DUCKDB_LIB_DIR to a folder holding libduckdb.so 1.5.5 (`ducklake-catalog connect --lang rust` prints it), or build with `--features bundled` to compile DuckDB (slow)"
        ),
    }
}
