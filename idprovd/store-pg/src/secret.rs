//! The database password: read from a file or an environment variable,
//! held in a type that neither prints nor serializes.

use idprovd_core::config::PostgresConfig;
use idprovd_core::store::StoreError;

/// A password. `Debug` shows `***`; there is no `Display` or `Serialize`.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The password the configuration points at, if it names one.
    pub fn from_config(cfg: &PostgresConfig) -> Result<Option<Password>, StoreError> {
        if let Some(path) = &cfg.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StoreError::Db(format!(
                    "store.postgres.password_file {}: {e}",
                    path.display()
                ))
            })?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                return Err(StoreError::Db(format!(
                    "store.postgres.password_file {} is empty",
                    path.display()
                )));
            }
            return Ok(Some(Password(line)));
        }
        if let Some(var) = &cfg.password_env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Password(v))),
                _ => Err(StoreError::Db(format!(
                    "store.postgres.password_env names {var}, which is not set"
                ))),
            };
        }
        Ok(None)
    }
}
