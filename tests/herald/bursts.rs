//! Issue 23's bursts through real processes: `herald worker` (PostgreSQL
//! store, Redis queue, jobs run in concurrent batches, so ids commit out of
//! order) publishes 5,000 notifications for one user to `herald sidecar`
//! over the Redis layer at its default capacity (100). A client with a
//! 4 KiB receive buffer reads nothing while they are made, then reads to
//! the end; another reads 10 messages a second through a burst of 300
//! (served at its pace, or closed with 4008 and resumed from its own
//! cursor). Each must end with every id, and no `resumed` may vouch
//! (`recovered: true`) for a gap it leaves.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald::queue::{JobQueue, submit_many};
use herald::store::{JobState, Store};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::faults::{SECRET, free_port};
use crate::queue::{Case, queue_env, submission};
use crate::resilience::{wait_until, worker_process};

const BURST: usize = 5000;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to the sidecar on `port` for `user`, resuming after
/// `last_id` when given, over a TCP socket whose receive buffer is
/// `rcvbuf` bytes (the kernel doubles it); answers once herald has joined
/// the user's group (its pong).
async fn connect(port: u16, user: i64, last_id: Option<i64>, rcvbuf: u32) -> Socket {
    let token =
        herald::tokens::mint(&SecretString::from(SECRET), user, Duration::from_secs(900)).unwrap();
    let query = last_id
        .map(|id| format!("?last_id={id}"))
        .unwrap_or_default();
    let mut request = format!("ws://127.0.0.1:{port}/ws/notifications/{query}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&token).unwrap(),
    );
    // The sidecar may still be starting: try for up to 30 s.
    let mut tries = 0;
    let stream = loop {
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(rcvbuf).unwrap();
        match tcp
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
        {
            Ok(stream) => break stream,
            Err(error) if tries < 300 => {
                tries += 1;
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the sidecar on {port} never answered: {error}"),
        }
    };
    let (mut socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    socket
        .send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the sidecar answers")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame
            && serde_json::from_str::<Value>(&text).unwrap()["type"] == "pong"
        {
            return socket;
        }
    }
}

/// What a client read: notification frames, distinct ids, `resumed`
/// answers (`recovered` of each), and the close code if it was closed.
#[derive(Default, Debug)]
struct Reading {
    frames: usize,
    ids: BTreeSet<i64>,
    recovered: Vec<bool>,
    close: Option<u16>,
}

/// Reads `socket` until it is quiet for `quiet`, or closed; `pause`
/// between frames makes a slow reader. Pages resumes while `more`.
async fn read_to_the_end(
    socket: &mut Socket,
    reading: &mut Reading,
    pause: Duration,
    quiet: Duration,
) {
    loop {
        let frame = match tokio::time::timeout(quiet, socket.next()).await {
            Err(_) | Ok(None) => return,
            Ok(Some(Err(_))) => return,
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                match event["type"].as_str() {
                    Some("notification") => {
                        reading.frames += 1;
                        reading.ids.insert(event["data"]["id"].as_i64().unwrap());
                    }
                    Some("resumed") => {
                        reading.recovered.push(event["data"]["recovered"] == true);
                        if event["data"]["more"] == true {
                            let resume =
                                json!({"type": "resume", "last_id": event["data"]["last_id"]});
                            let _ = socket.send(Message::text(resume.to_string())).await;
                        }
                    }
                    _ => {}
                }
            }
            Message::Close(frame) => {
                reading.close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                return;
            }
            _ => {}
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Every notification id of `user`, oldest first.
async fn ids_of(store: &Store, user: i64) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = store
            .list_notifications_after(user, after, 500)
            .await
            .unwrap();
        let Some(last) = page.last() else { return ids };
        after = last.id;
        ids.extend(page.iter().map(|row| row.id));
    }
}

/// A worker and a sidecar on a fresh PostgreSQL database and the shared
/// Redis (queue and layer), `extra` given to the sidecar; answers the
/// store, the queue and the sidecar's port, and the processes to keep.
async fn processes(
    extra: &[(&str, &str)],
) -> (
    crate::queue::QueueEnv,
    JobQueue,
    u16,
    Vec<crate::resilience::WorkerProcess>,
) {
    let env = queue_env(Case::Redis).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let redis = env.settings.queue_redis_url().unwrap().to_string();
    let (worker, _) = worker_process(&env.settings, &[("REDIS_URL", redis.as_str())]);
    let port = free_port();
    let sidecar = crate::faults::front_process("sidecar", &env.settings, &redis, port, extra);
    (env, queue, port, vec![worker, sidecar])
}

/// Submits `count` notify jobs for `user`, 500 at a time, and waits for
/// all to be done.
async fn burst(store: &Store, queue: &JobQueue, user: i64, count: usize) {
    let submissions: Vec<_> = (0..count)
        .map(|n| {
            let payload = json!({"user_id": user, "title": format!("b{n}"), "message": "m",
                "notification_type": "info"});
            submission("notify", payload)
        })
        .collect();
    for chunk in submissions.chunks(500) {
        let answers = submit_many(store, queue, chunk.to_vec()).await.unwrap();
        assert_eq!(answers.len(), chunk.len(), "every submission queued");
    }
    wait_until("every job done", Duration::from_secs(240), async || {
        store.count_jobs(JobState::Done).await.unwrap() == count as i64
    })
    .await;
}

/// After a close, the client resumes from its own cursor (the highest id
/// it has), as the contract's clients do, and reads to the end.
async fn resume_after_close(port: u16, user: i64, reading: &mut Reading) {
    if reading.close.is_none() {
        return;
    }
    let last = reading.ids.last().copied().unwrap_or(0);
    let mut back = connect(port, user, Some(last), 1 << 20).await;
    reading.close = None;
    read_to_the_end(&mut back, reading, Duration::ZERO, Duration::from_secs(3)).await;
}

fn assert_every_id(reading: &Reading, rows: &BTreeSet<i64>, count: usize, who: &str) {
    assert_eq!(rows.len(), count, "one row per job");
    let missing: Vec<_> = rows.difference(&reading.ids).take(20).collect();
    assert!(
        missing.is_empty(),
        "{who}: {} of {count} ids missing (first: {missing:?}); resumed answers {:?}",
        rows.len() - rows.intersection(&reading.ids).count(),
        reading.recovered,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_gets_every_id_of_a_worker_burst() {
    let (env, queue, port, _processes) = processes(&[]).await;
    let user = 301;
    let mut sleeper = connect(port, user, None, 4096).await;
    let started = std::time::Instant::now();
    burst(&env.db.store, &queue, user, BURST).await;
    let made_in = started.elapsed();
    let mut reading = Reading::default();
    read_to_the_end(
        &mut sleeper,
        &mut reading,
        Duration::ZERO,
        Duration::from_secs(3),
    )
    .await;
    let closed = reading.close;
    resume_after_close(port, user, &mut reading).await;
    let rows = ids_of(&env.db.store, user).await;
    assert_every_id(&reading, &rows, BURST, "the client that never read");
    eprintln!(
        "burst: never-reading client (4 KiB receive buffer), {BURST} notifications made in {:.1} s \
         by herald worker | frames {} ({} distinct, all {BURST}) | closed {closed:?} | resumed \
         answers {} (recovered false: {})",
        made_in.as_secs_f64(),
        reading.frames,
        reading.ids.len(),
        reading.recovered.len(),
        reading.recovered.iter().filter(|r| !**r).count(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reading_ten_a_second_gets_every_id() {
    const SLOW_BURST: usize = 300;
    let (env, queue, port, _processes) =
        processes(&[("HERALD_SIDECAR__WRITE_TIMEOUT", "2s")]).await;
    let user = 302;
    let mut slow = connect(port, user, None, 4096).await;
    let mut reading = Reading::default();
    // A phone on a slow link: 10 messages a second, its socket's buffer
    // 4 KiB. The sidecar serves it at that pace (or closes it with 4008
    // when a write waits past its write timeout, 2 s here).
    let read_slowly = read_to_the_end(
        &mut slow,
        &mut reading,
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    let started = std::time::Instant::now();
    tokio::join!(burst(&env.db.store, &queue, user, SLOW_BURST), read_slowly);
    let closed = reading.close;
    if let Some(code) = closed {
        assert_eq!(
            code, 4008,
            "a slow client is closed as slow_client, if at all"
        );
    }
    let before = reading.ids.len();
    // Closed: back on a good link, it resumes from its own cursor.
    resume_after_close(port, user, &mut reading).await;
    let rows = ids_of(&env.db.store, user).await;
    assert_every_id(&reading, &rows, SLOW_BURST, "the slow client");
    eprintln!(
        "burst: client reading 10 a second, {SLOW_BURST} notifications | read for {:.0} s | \
         closed {closed:?} after {before} ids | {} distinct of {SLOW_BURST} ({} frames) | resumed \
         answers {} (recovered false: {})",
        started.elapsed().as_secs_f64(),
        reading.ids.len(),
        reading.frames,
        reading.recovered.len(),
        reading.recovered.iter().filter(|r| !**r).count(),
    );
}
