//! Evaluation sets (`/agents/{id}/evals`): cases with expected documents,
//! facts and answers, runs that answer them through the reply path, exact
//! scores on a small corpus with known right answers, and comparisons of
//! two runs when cases are made deliberately wrong.

use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::{Session, TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::replies::default_provider;

const RETURNS: &str = "Returns are free for thirty days. Send the parcel back with the label.";
const SHIPPING: &str = "Orders ship within two days from the Utrecht warehouse.";

struct Corpus {
    agent: String,
    returns: String,
    shipping: String,
}

async fn corpus(app: &TestApp, s: &Session) -> Corpus {
    let r = app
        .post(
            "/api/v1/agents",
            s,
            json!({ "name": "Evaluated", "model": "gpt-eval" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let agent = r.body["id"].as_str().unwrap_or_default().to_owned();
    let returns = app
        .upload_text(s, "returns.txt", RETURNS, Some(&agent))
        .await;
    let shipping = app
        .upload_text(s, "shipping.txt", SHIPPING, Some(&agent))
        .await;
    app.wait_document_ready(s, &returns).await;
    app.wait_document_ready(s, &shipping).await;
    Corpus {
        agent,
        returns,
        shipping,
    }
}

/// Starts a run of `set` and waits for it; answers the run with results.
async fn run(app: &TestApp, s: &Session, agent: &str, set: &str) -> Value {
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/evals/{set}/runs"),
            s,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["job"]["type"], "eval_run");
    assert_eq!(r.body["run"]["status"], "QUEUED");
    let job = r.body["jobId"].as_str().unwrap_or_default().to_owned();
    let run_id = r.body["run"]["id"].as_str().unwrap_or_default().to_owned();
    let record = app.job_finished(s, &job).await;
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    let r = app
        .get(
            &format!("/api/v1/agents/{agent}/evals/{set}/runs/{run_id}"),
            s,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "SUCCEEDED", "{:?}", r.body);
    assert_eq!(r.body["jobId"], job.as_str());
    r.body
}

#[tokio::test]
async fn retrieval_only_scores_are_exact_and_drop_for_wrong_cases() {
    let app = spawn_app().await;
    let s = app.register("Evals").await;
    let c = corpus(&app, &s).await;
    let r = app
        .post(
            &format!("/api/v1/agents/{}/evals", c.agent),
            &s,
            json!({ "name": "Basics", "cases": [
                { "question": "Are returns free?", "expectedFacts": ["thirty days"],
                  "expectedDocumentIds": [c.returns] },
                { "question": "When do orders ship?", "expectedFacts": ["two days"],
                  "expectedAnswer": "Orders ship within two days",
                  "expectedDocumentIds": [c.shipping] },
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let set = r.body["id"].as_str().unwrap_or_default().to_owned();
    let cases = r.body["cases"].clone();
    assert_eq!(cases[0]["expectedAnswer"], Value::Null);

    let first = run(&app, &s, &c.agent, &set).await;
    let t = &first["totals"];
    assert_eq!(t["cases"], 2, "{first}");
    assert_eq!(t["retrievalHitRate"], 1.0, "{first}");
    assert_eq!(t["mrr"], 1.0, "{first}");
    assert_eq!(t["factScore"], 1.0, "{first}");
    assert_eq!(t["answerRecall"], 1.0, "{first}");
    // The retrieval-only responder quotes its passages.
    assert_eq!(t["grounding"], 1.0, "{first}");
    assert_eq!(t["totalTokens"], 0, "{first}");
    assert_eq!(
        first["results"][0]["retrievedDocumentIds"][0],
        c.returns.as_str()
    );
    assert_eq!(first["agent"]["model"], "gpt-eval");
    assert_eq!(first["agent"]["readyDocuments"], 2);
    assert_eq!(first["agent"]["aiProviderId"], Value::Null);

    // The same questions, deliberately wrong expectations for the first.
    let r = app
        .put(
            &format!("/api/v1/agents/{}/evals/{set}", c.agent),
            &s,
            json!({ "cases": [
                { "id": cases[0]["id"], "question": "Are returns free?",
                  "expectedFacts": ["ninety days"], "expectedDocumentIds": [c.shipping] },
                { "id": cases[1]["id"], "question": "When do orders ship?",
                  "expectedFacts": ["two days"], "expectedAnswer": "Orders ship within two days",
                  "expectedDocumentIds": [c.shipping] },
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["cases"][0]["id"], cases[0]["id"], "kept ids");
    let second = run(&app, &s, &c.agent, &set).await;
    let t = &second["totals"];
    assert_eq!(t["factScore"], 0.5, "{second}");
    assert_eq!(second["results"][0]["factsMissing"], json!(["ninety days"]));
    let rr = second["results"][0]["reciprocalRank"]
        .as_f64()
        .unwrap_or(1.0);
    assert!(
        rr <= 0.5,
        "the wrong document is not ranked first: {second}"
    );
    assert!(
        t["mrr"].as_f64().unwrap_or(1.0) < 1.0,
        "the mean reciprocal rank drops: {second}"
    );

    let listed = app
        .get(&format!("/api/v1/agents/{}/evals/{set}/runs", c.agent), &s)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["pagination"]["total"], 2);
    assert_eq!(listed.body["runs"][0]["id"], second["id"], "newest first");
    assert_eq!(listed.body["runs"][0]["results"], json!([]));

    let compared = app
        .get(
            &format!(
                "/api/v1/agents/{}/evals/{set}/runs/compare?a={}&b={}",
                c.agent,
                first["id"].as_str().unwrap_or_default(),
                second["id"].as_str().unwrap_or_default()
            ),
            &s,
        )
        .await;
    assert_eq!(compared.status, StatusCode::OK, "{:?}", compared.body);
    assert_eq!(compared.body["worse"], 1, "{:?}", compared.body);
    assert_eq!(compared.body["same"], 1, "{:?}", compared.body);
    assert_eq!(compared.body["better"], 0);
    assert_eq!(compared.body["cases"][0]["change"], "worse");
    assert_eq!(compared.body["cases"][1]["change"], "same");
    app.cleanup().await;
}

#[tokio::test]
async fn provider_answers_are_scored_for_facts_grounding_and_tokens() {
    let app = spawn_app().await;
    let fake = FakeOpenAi::start().await;
    let s = app.register("Graded").await;
    let c = corpus(&app, &s).await;
    default_provider(&app, &s, &fake).await;
    let r = app
        .post(
            &format!("/api/v1/agents/{}/evals", c.agent),
            &s,
            json!({ "name": "Graded", "cases": [
                { "question": "Are returns free?", "expectedFacts": ["thirty days", "free"] },
                { "question": "When do orders ship?", "expectedFacts": ["two days"] },
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let set = r.body["id"].as_str().unwrap_or_default().to_owned();
    // A right, grounded answer; then an invented one.
    fake.push_reply("Returns are free for thirty days.");
    fake.push_reply("We deliver by rocket to the moon.");
    let done = run(&app, &s, &c.agent, &set).await;
    let (a, b) = (&done["results"][0], &done["results"][1]);
    assert_eq!(a["answer"], "Returns are free for thirty days.");
    assert_eq!(a["factScore"], 1.0, "{done}");
    assert_eq!(a["grounding"], 1.0, "{done}");
    assert_eq!(b["factScore"], 0.0, "{done}");
    assert_eq!(b["grounding"], 0.0, "{done}");
    assert_eq!(b["retrievalHit"], Value::Null, "no expected documents");
    assert!(a["tokens"].as_u64().unwrap_or(0) > 0, "{done}");
    let t = &done["totals"];
    assert_eq!(t["factScore"], 0.5);
    assert_eq!(t["grounding"], 0.5);
    assert_eq!(t["retrievalHitRate"], Value::Null);
    assert_eq!(
        t["totalTokens"].as_u64(),
        Some(a["tokens"].as_u64().unwrap_or(0) + b["tokens"].as_u64().unwrap_or(0))
    );
    assert_eq!(fake.chat_requests().len(), 2, "one generation per case");
    // Nothing was stored as a conversation.
    let conversations = app.get("/api/v1/conversations", &s).await;
    assert_eq!(conversations.body["pagination"]["total"], 0);
    app.cleanup().await;
}

#[tokio::test]
async fn bad_cases_are_refused_by_name_and_sets_stay_in_their_tenant() {
    let app = spawn_app().await;
    let s = app.register("Strict").await;
    let other = app.register("Other").await;
    let c = corpus(&app, &s).await;
    let theirs = app
        .upload_text(&other, "theirs.txt", "Their own text.", None)
        .await;
    let path = format!("/api/v1/agents/{}/evals", c.agent);
    for (body, field) in [
        (json!({ "cases": [{ "question": "q" }] }), "name"),
        (json!({ "name": "n" }), "cases"),
        (json!({ "name": "n", "cases": [] }), "cases"),
        (
            json!({ "name": "n", "cases": [{ "question": "  " }] }),
            "cases[0].question",
        ),
        (
            json!({ "name": "n", "cases": [{ "question": "q", "expectedFacts": [""] }] }),
            "cases[0].expectedFacts[0]",
        ),
    ] {
        let r = app.post(&path, &s, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.body["details"]["field"], field, "{body}: {:?}", r.body);
    }
    let too_many: Vec<Value> = (0..201)
        .map(|i| json!({ "question": format!("q{i}") }))
        .collect();
    let r = app
        .post(&path, &s, json!({ "name": "n", "cases": too_many }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("200"),
        "{:?}",
        r.body
    );
    // Another tenant's document is not a document of this one.
    let r = app
        .post(
            &path,
            &s,
            json!({ "name": "n", "cases": [{ "question": "q", "expectedDocumentIds": [theirs] }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(theirs.as_str()),
        "{:?}",
        r.body
    );
    let r = app
        .post(
            &path,
            &s,
            json!({ "name": "Kept", "cases": [{ "question": "Are returns free?" }] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let set = r.body["id"].as_str().unwrap_or_default().to_owned();
    // Another tenant's administrator sees nothing of it.
    for url in [
        format!("{path}/{set}"),
        format!("{path}/{set}/runs"),
        path.clone(),
    ] {
        let r = app.get(&url, &other).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{url}: {:?}", r.body);
    }
    let r = app.get(&format!("{path}/{set}/runs/compare?a=x"), &s).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["details"]["field"], "b");
    let r = app.delete(&format!("{path}/{set}"), &s).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get(&format!("{path}/{set}"), &s).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.cleanup().await;
}

async fn import(
    app: &TestApp,
    s: &Session,
    agent: &str,
    file: (&str, Vec<u8>),
    name: Option<&str>,
) -> aigentable_tests::Reply {
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(file.1).file_name(file.0.to_owned()),
    );
    if let Some(n) = name {
        form = form.text("name", n.to_owned());
    }
    let res = app
        .http
        .post(app.url(&format!("/api/v1/agents/{agent}/evals/import")))
        .bearer_auth(&s.token)
        .header("X-Tenant-ID", &s.tenant_id)
        .multipart(form)
        .send()
        .await
        .expect("import sent");
    TestApp::reply(res).await
}

fn workbook(rows: &[&[&str]]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            sheet
                .write_string(
                    u32::try_from(r).unwrap_or(0),
                    u16::try_from(c).unwrap_or(0),
                    *cell,
                )
                .expect("cell written");
        }
    }
    book.save_to_buffer().expect("workbook")
}

#[tokio::test]
async fn sets_are_imported_from_csv_and_xlsx_with_errors_naming_the_row() {
    let app = spawn_app().await;
    let s = app.register("Acme").await;
    let c = corpus(&app, &s).await;

    // CSV (semicolons, as Excel writes it in most of Europe); documents by
    // name or id; an extra column is ignored.
    let csv = format!(
        "Question;Expected answer;Expected facts;Expected documents;Notes\n\
         Are returns free?;Returns are free for thirty days.;thirty days|free;returns.txt;from the FAQ\n\
         How fast do orders ship?;;two days;{};\n",
        c.shipping
    );
    let r = import(&app, &s, &c.agent, ("faq.csv", csv.into_bytes()), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["name"], "faq", "named after the file");
    let cases = r.body["cases"].as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0]["question"], "Are returns free?");
    assert_eq!(cases[0]["expectedFacts"], json!(["thirty days", "free"]));
    assert_eq!(cases[0]["expectedDocumentIds"], json!([c.returns]));
    assert_eq!(cases[1]["expectedAnswer"], Value::Null);
    assert_eq!(cases[1]["expectedDocumentIds"], json!([c.shipping]));

    // The imported set runs like any other: retrieval finds both.
    let set = r.body["id"].as_str().unwrap_or_default().to_owned();
    let finished = run(&app, &s, &c.agent, &set).await;
    assert_eq!(finished["totals"]["retrievalHitRate"], 1.0, "{finished}");

    // XLSX, named by the form.
    let book = workbook(&[
        &["question", "facts"],
        &["Where do orders ship from?", "Utrecht"],
    ]);
    let r = import(&app, &s, &c.agent, ("cases.xlsx", book), Some("Warehouse")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["name"], "Warehouse");
    assert_eq!(r.body["cases"][0]["expectedFacts"], json!(["Utrecht"]));

    // Errors name the problem (and the row); nothing refused is stored.
    let big = format!("question\n{}", "Is this a question?\n".repeat(60_000));
    let many = format!("question\n{}", "Is this a question?\n".repeat(201));
    let refused: [(&str, Vec<u8>, StatusCode, &str); 6] = [
        (
            "x.csv",
            b"q,answer\nhi,there\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "no `question` column",
        ),
        (
            "x.csv",
            b"question,documents\nok?,\n\n,returns.txt\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "file row 4, question must not be empty",
        ),
        (
            "x.csv",
            b"question,documents\nok?,nowhere.pdf\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown documents: nowhere.pdf",
        ),
        (
            "x.pdf",
            b"%PDF-1.4 junk".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "CSV file or an Excel workbook",
        ),
        (
            "big.csv",
            big.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
        (
            "many.csv",
            many.into_bytes(),
            StatusCode::BAD_REQUEST,
            "more than 201 rows",
        ),
    ];
    for (name, bytes, status, says) in refused {
        let r = import(&app, &s, &c.agent, (name, bytes), None).await;
        assert_eq!(r.status, status, "{name}: {:?}", r.body);
        assert!(
            r.body["message"].as_str().is_some_and(|m| m.contains(says)),
            "{name}: {:?}",
            r.body
        );
    }
    // Another tenant can neither import into this agent nor name this
    // tenant's documents.
    let other = app.register("Other").await;
    let csv = b"question,documents\nAre returns free?,returns.txt\n".to_vec();
    let r = import(&app, &other, &c.agent, ("x.csv", csv.clone()), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = app
        .post("/api/v1/agents", &other, json!({ "name": "Theirs" }))
        .await;
    let theirs = r.body["id"].as_str().unwrap_or_default().to_owned();
    let r = import(&app, &other, &theirs, ("x.csv", csv), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown documents: returns.txt")),
        "{:?}",
        r.body
    );
    // Nothing of the refused files was stored.
    let r = app
        .get(&format!("/api/v1/agents/{}/evals", c.agent), &s)
        .await;
    assert_eq!(r.body["evals"].as_array().map(Vec::len), Some(2));
    app.cleanup().await;
}
