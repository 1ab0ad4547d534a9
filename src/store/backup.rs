//! Online backups of a SQLite database: `VACUUM INTO` writes a consistent copy (one read
//! transaction, so `serve` keeps writing meanwhile; SQLite ≥ 3.27), and the copy is checked
//! with `PRAGMA integrity_check`. PostgreSQL is backed up with `pg_dump` (docs/backup.md).

use std::path::Path;

use super::Store;
use super::dialect::Dialect;
use super::error::{Result, StoreError};

impl Store {
    /// Writes a consistent copy of this SQLite database to `path`, which must not exist. Errors
    /// with `Conflict` on PostgreSQL or when `path` exists.
    pub async fn backup_into(&self, path: &Path) -> Result<()> {
        if self.dialect != Dialect::Sqlite {
            return Err(StoreError::Conflict(
                "backup copies SQLite databases; back PostgreSQL up with pg_dump (docs/backup.md)".into(),
            ));
        }
        if path.exists() {
            return Err(StoreError::Conflict(format!("{} exists; name a new file", path.display())));
        }
        let target =
            path.to_str().ok_or_else(|| StoreError::Conflict("the backup path is not UTF-8".into()))?;
        // Readers are `query_only`, which refuses VACUUM INTO; on the writer connection it is
        // still one read transaction of the source, so other processes' writers carry on.
        sqlx::query("VACUUM INTO $1").bind(target).execute(&self.writer).await?;
        Ok(())
    }

    /// `PRAGMA integrity_check` (SQLite) : `Ok(())` or the problems it lists. PostgreSQL checks
    /// its own pages; there this returns `Ok(())`.
    pub async fn integrity_check(&self) -> Result<std::result::Result<(), String>> {
        if self.dialect != Dialect::Sqlite {
            return Ok(Ok(()));
        }
        let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&self.reader).await?;
        Ok(if lines == ["ok"] { Ok(()) } else { Err(lines.join("; ")) })
    }
}
