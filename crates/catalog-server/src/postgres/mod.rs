//! PostgreSQL as the server sees it: the supervisor (`pg-cluster`) and the administration's
//! sessions (`lake-admin`, `pg-conn`) under one path.

pub use lake_admin::postgres::*;
pub use pg_cluster::sizing;
pub use pg_cluster::{
    create_home_dir, home_io, own_tree, Boot, Cluster, ClusterError, ClusterSettings, ControlData,
    OsUser, PgBinaries, RunningPostgres, ShutdownMode,
};
