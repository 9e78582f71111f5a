//! Idempotent start-up work: indexes and the first platform administrator.

use bson::doc;
use mongodb::options::IndexOptions;
use std::time::Duration;

use crate::db::{Db, DbError};
use crate::domain::{Email, NewPassword, Role};
use crate::model::{Tenant, User, tenant::Tenants, user};
use crate::{Platform, StartError, auth};

/// Creates every index the application relies on. Safe to run from every
/// process at every start.
pub async fn ensure_indexes(db: &Db) -> Result<(), DbError> {
    let unique = || IndexOptions::builder().unique(true).build();
    db.ensure_index("users", doc! { "email": 1 }, Some(unique()))
        .await?;
    crate::api_keys::ensure_indexes(db).await?;
    db.ensure_index("users", doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await?;
    db.ensure_index("tenants", doc! { "createdAt": -1 }, None)
        .await?;
    db.ensure_index(
        "password_resets",
        doc! { "expiresAt": 1 },
        Some(
            IndexOptions::builder()
                .expire_after(Duration::from_secs(0))
                .build(),
        ),
    )
    .await?;
    db.ensure_index("password_resets", doc! { "tenantId": 1, "userId": 1 }, None)
        .await?;
    db.ensure_index(
        "email_verifications",
        doc! { "expiresAt": 1 },
        Some(
            IndexOptions::builder()
                .expire_after(Duration::from_secs(0))
                .build(),
        ),
    )
    .await?;
    db.ensure_index("documents", doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await?;
    db.ensure_index(
        "documents",
        doc! { "tenantId": 1, "agentId": 1, "status": 1 },
        None,
    )
    .await?;
    db.ensure_index("agents", doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await?;
    // An agent's evaluation sets and a set's runs, newest first.
    db.ensure_index(
        "eval_sets",
        doc! { "tenantId": 1, "agentId": 1, "createdAt": -1 },
        None,
    )
    .await?;
    db.ensure_index(
        "eval_runs",
        doc! { "tenantId": 1, "evalSetId": 1, "createdAt": -1 },
        None,
    )
    .await?;
    // Default-provider lookups (every reply and ingestion) and listings.
    db.ensure_index(
        "ai_providers",
        doc! { "tenantId": 1, "isDefault": -1, "createdAt": 1 },
        None,
    )
    .await?;
    db.ensure_index("jobs", doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await?;
    db.ensure_index("jobs", doc! { "tenantId": 1, "status": 1, "type": 1 }, None)
        .await?;
    // The sweep's retention purge of finished job records.
    db.ensure_index("jobs", doc! { "status": 1, "finishedAt": 1 }, None)
        .await?;
    db.ensure_index("outbox", doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await?;
    // The monthly token allowance every bot reply checks.
    db.ensure_index(
        crate::usage::collections::TOKEN_USAGE,
        doc! { "tenantId": 1, "createdAt": 1 },
        None,
    )
    .await?;
    // Messaging. The sparse unique dedupKey makes a replayed webhook or a
    // retried reply job unable to store a second copy.
    let unique_sparse = || IndexOptions::builder().unique(true).sparse(true).build();
    db.ensure_index("messages", doc! { "dedupKey": 1 }, Some(unique_sparse()))
        .await?;
    // The sweep's look for conversations the bot left waiting
    // (`answer_message`). Not led by `status`: secantusd-rs would route a
    // tenant's flat `{status, tenantId}` listing through it, across tenants.
    db.ensure_index("conversations", doc! { "awaitingSince": 1 }, None)
        .await?;
    // The sweep's look for deliveries left queued (`deliver_reply`).
    db.ensure_index("messages", doc! { "status": 1, "updatedAt": 1 }, None)
        .await?;
    db.ensure_index(
        "messages",
        doc! { "tenantId": 1, "conversationId": 1, "createdAt": 1 },
        None,
    )
    .await?;
    db.ensure_index(
        "messages",
        doc! { "channelId": 1, "externalMessageId": 1 },
        None,
    )
    .await?;
    db.ensure_index(
        "contacts",
        doc! { "tenantId": 1, "channelId": 1, "externalId": 1 },
        Some(unique()),
    )
    .await?;
    db.ensure_index(
        "conversations",
        doc! { "tenantId": 1, "channelId": 1, "externalUserId": 1, "status": 1 },
        None,
    )
    .await?;
    db.ensure_index(
        "conversations",
        doc! { "tenantId": 1, "lastMessageAt": -1 },
        None,
    )
    .await?;
    db.ensure_index("channels", doc! { "tenantId": 1, "createdAt": -1 }, None)
        .await?;
    db.ensure_index("channels", doc! { "publicKey": 1 }, Some(unique_sparse()))
        .await?;
    db.ensure_index("channels", doc! { "routingKey": 1 }, Some(unique_sparse()))
        .await?;
    // Meta's public subscription check looks channels up by verify token.
    db.ensure_index("channels", doc! { "webhookSecret": 1 }, None)
        .await?;
    // Raw webhook payloads are kept 30 days for audit and replays.
    db.ensure_index(
        "webhook_events",
        doc! { "createdAt": 1 },
        Some(
            IndexOptions::builder()
                .expire_after(Duration::from_secs(30 * 86_400))
                .build(),
        ),
    )
    .await?;
    crate::analytics::ensure_indexes(db).await?;
    Ok(())
}

/// Name of the tenant that holds platform administrators.
pub const PLATFORM_TENANT_NAME: &str = "AIgentable Platform";

/// Creates a `SUPER_ADMIN` (and the platform tenant that holds it). Used by
/// the `api create-super-admin` command and by the env seed at first start.
pub async fn create_super_admin(
    platform: &Platform,
    email: &str,
    password: &str,
) -> Result<User, StartError> {
    let email = Email::parse("email", email).map_err(|e| StartError::Other(e.to_string()))?;
    let password =
        NewPassword::parse("password", password).map_err(|e| StartError::Other(e.to_string()))?;
    if user::find_by_email_unscoped(&platform.db, &email)
        .await?
        .is_some()
    {
        return Err(StartError::Other(format!(
            "a user with email {email} already exists"
        )));
    }
    let tenant = Tenant::new(PLATFORM_TENANT_NAME.to_owned(), "enterprise".to_owned());
    Tenants(&platform.db).insert(&tenant).await?;
    let hash = auth::password::hash(password.expose())
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    let admin = User::new(
        tenant.id.clone(),
        email,
        hash,
        "Platform".to_owned(),
        "Administrator".to_owned(),
        Role::SuperAdmin,
    );
    platform
        .db
        .scoped::<User>(&tenant.id)
        .insert(&admin)
        .await?;
    Ok(admin)
}

/// Seeds the first `SUPER_ADMIN` from `SUPER_ADMIN_EMAIL`/`SUPER_ADMIN_PASSWORD`
/// when no platform administrator exists yet.
pub async fn seed_super_admin(platform: &Platform) -> Result<(), StartError> {
    let Some(seed) = platform.config.super_admin_seed.clone() else {
        return Ok(());
    };
    if user::any_super_admin(&platform.db).await? {
        return Ok(());
    }
    match create_super_admin(platform, &seed.email, seed.password.expose()).await {
        Ok(admin) => {
            tracing::info!(user_id = %admin.id, "seeded the first super admin");
            Ok(())
        }
        // Another replica won the race.
        Err(StartError::Mongo(DbError::Duplicate)) => Ok(()),
        Err(e) => Err(e),
    }
}
