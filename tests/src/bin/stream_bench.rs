//! Time to first visible token of a streamed reply, as a website visitor
//! sees it, against the real api (port 0) with in-process workers, the
//! local Redis and MongoDB:
//!
//! ```sh
//! cargo run --release -p aigentable-tests --bin stream_bench -- [--samples 50] [--words 60] [--word-ms 20]
//! ```
//!
//! The tenant's AI provider is the local fake OpenAI-compatible server,
//! streaming its answer a word every `--word-ms` (a fixed rate, like a
//! model writing ~50 tokens/s at the default). A visitor's socket (the
//! widget's `/widget` namespace) is joined to its conversation; each
//! sample posts the visitor's message and times, from just before the
//! POST, the first `message-delta` (what the visitor first sees) and the
//! stored `new-message` (what a client that ignores deltas waits for). One
//! sample at a time; a new visitor every 15 samples (the widget allows a
//! visitor 20 messages a minute).
//!
//! Uses a fresh database and Redis namespace, dropped at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use aigentable_tests::fake_openai::FakeOpenAi;
use aigentable_tests::fake_providers::{app_with_fake, create_agent, create_channel};
use aigentable_tests::socket::connect;
use aigentable_tests::stats::percentile;

const SITE: &str = "https://shop.example.com";
/// Messages timed per visitor, under the widget's 20 a minute.
const SAMPLES_PER_VISITOR: usize = 15;

struct Args {
    samples: usize,
    words: usize,
    word_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        samples: 50,
        words: 60,
        word_ms: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v: u64 = it
            .next()
            .with_context(|| format!("{a} needs a value"))?
            .parse()
            .with_context(|| format!("{a} must be a number"))?;
        match a.as_str() {
            "--samples" => args.samples = usize::try_from(v.max(1))?,
            "--words" => args.words = usize::try_from(v.max(1))?,
            "--word-ms" => args.word_ms = v,
            other => bail!(
                "unknown argument {other}; usage: stream_bench [--samples N] [--words N] [--word-ms N]"
            ),
        }
    }
    Ok(args)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the api and workers binaries do: the same allocator behaviour.
    aigentable_allocator::return_large_blocks();
    let args = parse_args()?;
    let (app, _fake) = app_with_fake(&[("LOG_FORMAT", "json")]).await;
    let admin = app.register("Bench").await;
    let llm = FakeOpenAi::start().await;
    llm.set_stream_interval(Duration::from_millis(args.word_ms));
    let r = app
        .post(
            "/api/v1/ai-providers",
            &admin,
            json!({"name": "fake", "type": "OPENAI_COMPATIBLE", "baseUrl": llm.base_url(),
                   "apiKey": "sk-bench-0000", "chatModel": "bench-model", "isDefault": true}),
        )
        .await;
    if !r.status.is_success() {
        bail!("could not configure the fake AI provider: {:?}", r.body);
    }
    let agent = create_agent(&app, &admin).await;
    let channel = create_channel(
        &app,
        &admin,
        json!({"type": "WEBSITE", "name": "Site chat", "agentId": agent,
               "config": {"allowedOrigins": [SITE]}}),
    )
    .await;
    let key = channel["publicKey"].as_str().unwrap_or_default().to_owned();
    let widget = app.url(&format!("/api/v1/widget/{key}"));
    let http = reqwest::Client::new();
    let answer: String = (1..=args.words)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let post = |token: String, text: String| {
        let http = http.clone();
        let url = format!("{widget}/messages");
        async move {
            let r = http
                .post(url)
                .header("Origin", SITE)
                .bearer_auth(token)
                .json(&json!({ "text": text }))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("the visitor's message was refused: {}", r.status());
            }
            anyhow::Ok(())
        }
    };
    // A new visitor: the first message creates the conversation, then the
    // visitor's socket joins it, as the widget does.
    let visitor = || {
        let http = http.clone();
        let sessions = format!("{widget}/sessions");
        let base = app.base.clone();
        let llm = llm.clone();
        async move {
            let session: Value = http
                .post(sessions)
                .header("Origin", SITE)
                .json(&json!({}))
                .send()
                .await?
                .json()
                .await?;
            let token = session["token"]
                .as_str()
                .context("no visitor token")?
                .to_owned();
            llm.push_reply("Hello!");
            post(token.clone(), "hello".to_owned()).await?;
            let mut socket = connect(&base, "/widget", json!({ "token": token })).await;
            if socket
                .join_widget_conversation(100)
                .await
                .is_none_or(|ack| ack["ok"] != true)
            {
                bail!("the visitor's conversation never existed");
            }
            // The greeting's own reply, if it is still coming.
            let _ = socket.next_named("new-message", 10).await;
            while socket.events.try_recv().is_ok() {}
            anyhow::Ok((token, socket))
        }
    };

    let mut first = Vec::with_capacity(args.samples);
    let mut whole = Vec::with_capacity(args.samples);
    let mut deltas = 0usize;
    let (mut token, mut socket) = visitor().await?;
    for i in 0..args.samples {
        // A visitor may write 20 messages a minute.
        if i > 0 && i % SAMPLES_PER_VISITOR == 0 {
            let _ = socket.client.disconnect().await;
            (token, socket) = visitor().await?;
        }
        llm.push_reply(&answer);
        let t0 = Instant::now();
        post(token.clone(), format!("question {i}")).await?;
        let mut first_at = None;
        loop {
            let left = Duration::from_secs(60).saturating_sub(t0.elapsed());
            let Ok(Some((event, data))) = tokio::time::timeout(left, socket.events.recv()).await
            else {
                bail!("no reply within 60 s for sample {i}");
            };
            match event.as_str() {
                "message-delta" => {
                    deltas += 1;
                    first_at.get_or_insert_with(|| t0.elapsed());
                }
                "new-message" if data["from"] == "bot" => {
                    if data["content"] != answer.as_str() {
                        bail!("sample {i} got another answer: {data}");
                    }
                    let Some(f) = first_at else {
                        bail!("sample {i}: the reply came whole, without deltas");
                    };
                    first.push(f);
                    whole.push(t0.elapsed());
                    break;
                }
                _ => {}
            }
        }
    }
    first.sort();
    whole.sort();
    println!(
        "streamed replies ({} samples, {} words at {} ms each, {} delta events in all, {:.1} per reply, {} LLM calls):",
        args.samples,
        args.words,
        args.word_ms,
        deltas,
        deltas as f64 / args.samples as f64,
        llm.chat_requests().len()
    );
    println!(
        "  message -> first delta at the visitor: p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&first, 50.0)),
        ms(percentile(&first, 99.0))
    );
    println!(
        "  message -> whole reply (new-message):  p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&whole, 50.0)),
        ms(percentile(&whole, 99.0))
    );
    let _ = socket.client.disconnect().await;
    let _ = app.platform.db.database().drop().await;
    let _ = std::fs::remove_dir_all(&app.platform.config.data_dir);
    std::process::exit(0);
}
