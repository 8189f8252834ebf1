//! Resource pools in PostgreSQL.

use async_trait::async_trait;
use domain::{Metadata, NewEvent, Resource, ResourceId, ResourceMap, Task};
use ports::{RepoError, ResourceRepository};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{check_written, corrupt, repo_error};
use crate::events::commit_with;
use crate::rows::ReadRows;
use crate::PgStore;

const COLUMNS: &str =
    "id, name, type, capacity, metadata, maintenance, created_at, updated_at, version";

fn resource_from_row(row: &PgRow) -> Result<Resource, RepoError> {
    let e = repo_error;
    let capacity: Value = row.try_get("capacity").map_err(e)?;
    let metadata: Value = row.try_get("metadata").map_err(e)?;
    Ok(Resource {
        id: ResourceId(row.try_get("id").map_err(e)?),
        name: row.try_get("name").map_err(e)?,
        kind: row.try_get("type").map_err(e)?,
        capacity: match &capacity {
            Value::Object(map) => ResourceMap::from_stored_json("capacity", map)
                .map_err(|err| corrupt("resource capacity", err))?,
            other => return Err(corrupt("resource capacity", other)),
        },
        metadata: match metadata {
            Value::Object(map) => {
                Metadata::parse(map).map_err(|err| corrupt("resource metadata", err))?
            }
            other => return Err(corrupt("resource metadata", other)),
        },
        maintenance: row.try_get("maintenance").map_err(e)?,
        created_at: row.try_get("created_at").map_err(e)?,
        updated_at: row.try_get("updated_at").map_err(e)?,
        version: row.try_get("version").map_err(e)?,
    })
}

/// Every pool, locked until the end of the caller's transaction: a scheduling pass allocates
/// from what it read, and no change to a pool can commit in between.
pub(crate) async fn lock_pools(conn: &mut PgConnection) -> Result<Vec<Resource>, RepoError> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM resources FOR UPDATE"))
        .read_all(conn, resource_from_row)
        .await
}

/// Bumps the version of every pool a pass allocated from, over the version it read.
pub(crate) async fn mark_allocated(
    conn: &mut PgConnection,
    pools: &[Resource],
) -> Result<(), RepoError> {
    if pools.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = pools.iter().map(|p| p.id.as_uuid()).collect();
    let versions: Vec<i64> = pools.iter().map(|p| p.version).collect();
    let bumped = sqlx::query(
        "UPDATE resources r SET version = r.version + 1
         FROM unnest($1::uuid[], $2::bigint[]) AS v(id, version)
         WHERE r.id = v.id AND r.version = v.version",
    )
    .bind(&ids)
    .bind(versions)
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    // A pool gone since it was read is, for the write allocating from it, a lost race like a
    // pool that moved on: the caller reads again and finds the claim cannot be placed.
    check_written(
        conn,
        "resources",
        "resource pool",
        &ids,
        bumped.rows_affected(),
    )
    .await
    .map_err(|e| match e {
        RepoError::NotFound => {
            RepoError::Conflict("a resource pool was deleted since it was read".into())
        }
        other => other,
    })
}

#[async_trait]
impl ResourceRepository for PgStore {
    async fn insert_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        sqlx::query(&format!(
            "INSERT INTO resources ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)"
        ))
        .bind(pool.id.as_uuid())
        .bind(&pool.name)
        .bind(&pool.kind)
        .bind(Value::Object(pool.capacity.to_json()))
        .bind(Value::Object(pool.metadata.as_map().clone()))
        .bind(pool.maintenance)
        .bind(pool.created_at)
        .bind(pool.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        commit_with(self, tx, events).await
    }

    async fn get_resource(&self, id: ResourceId) -> Result<Resource, RepoError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM resources WHERE id = $1"))
            .bind(id.as_uuid())
            .read_one(self.pool(), resource_from_row)
            .await
    }

    async fn find_resource(&self, reference: &str) -> Result<Option<Resource>, RepoError> {
        let id = reference.parse::<Uuid>().ok();
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM resources WHERE id = $1 OR name = $2
             ORDER BY (id = $1) DESC NULLS LAST LIMIT 1"
        ))
        .bind(id)
        .bind(reference)
        .read_optional(self.pool(), resource_from_row)
        .await
    }

    async fn list_resources(&self, kind: Option<&str>) -> Result<Vec<Resource>, RepoError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM resources WHERE ($1::text IS NULL OR type = $1)
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(kind)
        .read_all(self.pool(), resource_from_row)
        .await
    }

    async fn claim_holders(&self) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        crate::task_rows::claim_holders(&mut conn).await
    }

    async fn update_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let updated = sqlx::query(
            "UPDATE resources SET capacity = $3, metadata = $4, maintenance = $5,
                                  updated_at = $6, version = version + 1
             WHERE id = $1 AND version = $2",
        )
        .bind(pool.id.as_uuid())
        .bind(pool.version)
        .bind(Value::Object(pool.capacity.to_json()))
        .bind(Value::Object(pool.metadata.as_map().clone()))
        .bind(pool.maintenance)
        .bind(pool.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        let ids = [pool.id.as_uuid()];
        check_written(
            &mut tx,
            "resources",
            "resource",
            &ids,
            updated.rows_affected(),
        )
        .await?;
        commit_with(self, tx, events).await
    }

    async fn delete_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let deleted = sqlx::query("DELETE FROM resources WHERE id = $1 AND version = $2")
            .bind(pool.id.as_uuid())
            .bind(pool.version)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
        let ids = [pool.id.as_uuid()];
        check_written(
            &mut tx,
            "resources",
            "resource",
            &ids,
            deleted.rows_affected(),
        )
        .await?;
        commit_with(self, tx, events).await
    }
}
