//! Users and tenants through the api, including cross-tenant probes.

use aigentable_platform::bootstrap::create_super_admin;
use aigentable_tests::{Session, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn users_list_paginates_filters_and_searches() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    for i in 0..11 {
        let r = app
            .post(
                "/api/v1/users",
                &admin,
                json!({ "email": format!("agent{i}@acme.io"), "password": "anotherPass456",
                        "firstName": format!("Agent{i}"), "lastName": "Smith" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.body["role"], "TENANT_USER");
        assert_eq!(r.body["status"], "ACTIVE");
    }
    let page1 = app.get("/api/v1/users", &admin).await;
    assert_eq!(page1.status, StatusCode::OK, "{:?}", page1.body);
    assert_eq!(page1.body["users"].as_array().map(Vec::len), Some(10));
    assert_eq!(
        page1.body["pagination"],
        json!({ "page": 1, "limit": 10, "total": 12, "pages": 2 })
    );
    let first = &page1.body["users"][0];
    for key in [
        "id",
        "email",
        "firstName",
        "lastName",
        "role",
        "status",
        "createdAt",
    ] {
        assert!(first.get(key).is_some(), "user has {key}");
    }
    let page2 = app.get("/api/v1/users?page=2&limit=10", &admin).await;
    assert_eq!(page2.body["users"].as_array().map(Vec::len), Some(2));

    let admins = app.get("/api/v1/users?role=TENANT_ADMIN", &admin).await;
    assert_eq!(admins.body["pagination"]["total"], 1);
    let search = app.get("/api/v1/users?search=agent1", &admin).await;
    // agent1 and agent10
    assert_eq!(search.body["pagination"]["total"], 2, "{:?}", search.body);
    let regex_chars = app.get("/api/v1/users?search=.*", &admin).await;
    assert_eq!(regex_chars.status, StatusCode::OK);
    assert_eq!(
        regex_chars.body["pagination"]["total"], 0,
        "search input is not a regex"
    );

    for bad in [
        "page=0",
        "limit=1000",
        "page=abc",
        "role=KING",
        "status=ASLEEP",
    ] {
        let r = app.get(&format!("/api/v1/users?{bad}"), &admin).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert!(
            r.body["details"]["field"].is_string(),
            "{bad}: {:?}",
            r.body
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn only_admins_manage_users_and_the_last_admin_stays() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let member = app.add_user(&admin, "TENANT_USER").await;

    // A member reads their own profile only, and cannot create, promote or delete.
    assert_eq!(
        app.get("/api/v1/users", &member).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/api/v1/users/{}", member.user_id), &member)
            .await
            .status,
        StatusCode::OK
    );
    let r = app
        .post("/api/v1/users", &member, json!({ "email": "x@acme.io", "password": "anotherPass456", "firstName": "X", "lastName": "Y" }))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &member,
            json!({ "role": "TENANT_ADMIN" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.delete(&format!("/api/v1/users/{}", admin.user_id), &member)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // ... but can edit their own name.
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &member,
            json!({ "firstName": "Gracie" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["firstName"], "Gracie");
    // Nobody grants SUPER_ADMIN from a tenant.
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &admin,
            json!({ "role": "SUPER_ADMIN" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &admin,
            json!({ "role": "OVERLORD" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "role");

    // The last admin can be neither demoted nor deleted.
    let r = app
        .put(
            &format!("/api/v1/users/{}", admin.user_id),
            &admin,
            json!({ "role": "TENANT_USER" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = app
        .delete(&format!("/api/v1/users/{}", admin.user_id), &admin)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Promote the member; now the first admin may step down.
    let r = app
        .put(
            &format!("/api/v1/users/{}", member.user_id),
            &admin,
            json!({ "role": "TENANT_ADMIN" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .put(
            &format!("/api/v1/users/{}", admin.user_id),
            &admin,
            json!({ "role": "TENANT_USER" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Delete and it is gone; the deleted user's token no longer works.
    let r = app
        .delete(&format!("/api/v1/users/{}", admin.user_id), &member)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/users/{}", admin.user_id), &member)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/auth/me", &admin).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Duplicate email on create is a conflict.
    let r = app
        .post("/api/v1/users", &member, json!({ "email": member.email, "password": "anotherPass456", "firstName": "X", "lastName": "Y" }))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    app.cleanup().await;
}

#[tokio::test]
async fn other_tenants_ids_are_not_found_and_tenant_header_must_match() {
    let app = spawn_app().await;
    let a = app.register("Alpha").await;
    let b = app.register("Beta").await;

    for (method, path) in [
        (Method::GET, format!("/api/v1/users/{}", b.user_id)),
        (Method::PUT, format!("/api/v1/users/{}", b.user_id)),
        (Method::DELETE, format!("/api/v1/users/{}", b.user_id)),
        (Method::GET, format!("/api/v1/tenants/{}", b.tenant_id)),
        (Method::PUT, format!("/api/v1/tenants/{}", b.tenant_id)),
        (
            Method::GET,
            format!("/api/v1/tenants/{}/usage", b.tenant_id),
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{}/billing", b.tenant_id),
        ),
        (Method::GET, "/api/v1/users/not-an-id".to_owned()),
    ] {
        let body =
            (method == Method::PUT).then(|| json!({ "firstName": "Mallory", "name": "Pwned" }));
        let r = app.request(method.clone(), &path, Some(&a), body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            r.body
        );
        assert!(!r.message().is_empty());
    }
    // B is untouched.
    let me = app.get("/api/v1/auth/me", &b).await;
    assert_eq!(me.body["user"]["firstName"], "Ada");
    assert_eq!(me.body["tenant"]["name"], "Beta");
    // A's list never shows B's users.
    let list = app.get("/api/v1/users", &a).await;
    assert_eq!(list.body["pagination"]["total"], 1);

    // A's token with B's tenant header is refused.
    let forged = Session {
        tenant_id: b.tenant_id.clone(),
        ..a.clone()
    };
    let r = app.get("/api/v1/users", &forged).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    app.cleanup().await;
}

#[tokio::test]
async fn tenant_settings_usage_and_billing() {
    let app = spawn_app().await;
    let admin = app.register("Acme").await;
    let member = app.add_user(&admin, "TENANT_USER").await;

    let list = app.get("/api/v1/tenants", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    assert_eq!(list.body["tenants"][0]["id"], admin.tenant_id.as_str());
    assert_eq!(
        app.get("/api/v1/tenants", &member).await.status,
        StatusCode::FORBIDDEN
    );

    let path = format!("/api/v1/tenants/{}", admin.tenant_id);
    let r = app
        .put(&path, &admin, json!({ "name": "Acme Corp", "settings": { "timezone": "Europe/Paris", "defaultLanguage": "fr" } }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], "Acme Corp");
    assert_eq!(r.body["settings"]["timezone"], "Europe/Paris");
    assert_eq!(r.body["settings"]["defaultLanguage"], "fr");

    let r = app
        .put(
            &path,
            &admin,
            json!({ "settings": { "timezone": "Mars/Olympus" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["details"]["field"], "settings.timezone");
    let r = app
        .put(&path, &admin, json!({ "plan": "enterprise" }))
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "plans are changed by the platform"
    );
    assert_eq!(
        app.put(&path, &member, json!({ "name": "Mine" }))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Nothing stored was lost by the refused updates.
    let r = app.get(&path, &admin).await;
    assert_eq!(r.body["name"], "Acme Corp");
    assert_eq!(r.body["settings"]["timezone"], "Europe/Paris");

    let usage = app.get(&format!("{path}/usage"), &admin).await;
    assert_eq!(usage.status, StatusCode::OK, "{:?}", usage.body);
    assert_eq!(usage.body["users"], 2);
    assert_eq!(usage.body["agents"], 0);
    assert_eq!(usage.body["llmTokens"], 0);

    let billing = app.get(&format!("{path}/billing"), &admin).await;
    assert_eq!(billing.status, StatusCode::OK, "{:?}", billing.body);
    assert_eq!(billing.body["plan"]["id"], "free");
    assert_eq!(billing.body["usage"]["users"], 2);
    assert_eq!(billing.body["overLimit"], json!([]));
    app.cleanup().await;
}

#[tokio::test]
async fn super_admin_acts_on_any_tenant() {
    let app = spawn_app().await;
    let tenant = app.register("Customer").await;
    create_super_admin(&app.platform, "root@aigentable.io", "rootPassword1")
        .await
        .expect("super admin created by the admin command");
    let login = app.login("root@aigentable.io", "rootPassword1").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.body["user"]["role"], "SUPER_ADMIN");
    let root = Session {
        token: login.body["token"].as_str().unwrap_or_default().to_owned(),
        tenant_id: tenant.tenant_id.clone(),
        user_id: login.body["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        email: "root@aigentable.io".into(),
        password: "rootPassword1".into(),
    };
    let all = app.get("/api/v1/tenants", &root).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["pagination"]["total"], 2, "{:?}", all.body);
    // With the customer's X-Tenant-ID it sees the customer's users.
    let users = app.get("/api/v1/users", &root).await;
    assert_eq!(users.status, StatusCode::OK, "{:?}", users.body);
    assert_eq!(users.body["users"][0]["id"], tenant.user_id.as_str());
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", tenant.tenant_id),
            &root,
            json!({ "plan": "pro" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan"], "pro");
    // A suspended tenant's users are locked out; the platform admin is not.
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", tenant.tenant_id),
            &root,
            json!({ "status": "SUSPENDED" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.get("/api/v1/auth/me", &tenant).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.message().contains("suspended"));
    assert_eq!(
        app.login(&tenant.email, &tenant.password).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get("/api/v1/users", &root).await.status, StatusCode::OK);
    let r = app
        .put(
            &format!("/api/v1/tenants/{}", tenant.tenant_id),
            &root,
            json!({ "status": "ACTIVE" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Public registration never creates a super admin.
    assert_eq!(
        app.get("/api/v1/auth/me", &tenant).await.body["user"]["role"],
        "TENANT_ADMIN"
    );
    app.cleanup().await;
}
