use std::io::Write;
use std::time::{Duration, Instant};

use super::*;

const NO_LIMITS: LogLimits = LogLimits {
    max_file_bytes: 0,
    max_total_bytes: 0,
};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn lines_reach_the_file_and_a_partial_line_is_kept_until_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path(), "stdout.txt", NO_LIMITS);
    log.write(b"one\ntw");
    log.write(b"o\nthr");
    log.flush();
    assert_eq!(
        read(&dir.path().join("stdout.txt")),
        "one\ntwo\n",
        "only whole lines are written early"
    );
    log.finish();
    assert_eq!(
        read(&dir.path().join("stdout.txt")),
        "one\ntwo\nthr",
        "the partial line is not lost"
    );
}

#[test]
fn an_existing_log_is_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stdout.txt"), "before\n").unwrap();
    let mut log = LogFile::open(dir.path(), "stdout.txt", NO_LIMITS);
    log.write(b"after\n");
    log.finish();
    assert_eq!(read(&dir.path().join("stdout.txt")), "before\nafter\n");
}

#[test]
fn the_file_rotates_at_a_line_boundary_keeping_one_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LogLimits {
        max_file_bytes: 10,
        max_total_bytes: 0,
    };
    let mut log = LogFile::open(dir.path(), "stdout.txt", limits);
    for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n"] {
        log.write(line.as_bytes());
    }
    log.finish();
    assert_eq!(read(&dir.path().join("stdout.txt")), "eeee\n");
    assert_eq!(read(&dir.path().join("stdout.txt.1")), "cccc\ndddd\n");
    assert!(
        !dir.path().join("stdout.txt.2").exists(),
        "only one older file is kept"
    );
}

#[test]
fn past_the_total_cap_lines_are_dropped_with_one_marker_counting_them() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LogLimits {
        max_file_bytes: 0,
        max_total_bytes: 12,
    };
    let mut log = LogFile::open(dir.path(), "stderr.txt", limits);
    for i in 0..10 {
        log.write(format!("line{i}\n").as_bytes());
    }
    log.write(b"tail");
    log.finish();
    let text = read(&dir.path().join("stderr.txt"));
    assert_eq!(
        text,
        "line0\nline1\n[hatchway] 9 lines (52 bytes) dropped: this log reached its limit of 12 bytes\n"
    );
}

#[test]
fn a_marker_after_a_partial_line_starts_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LogLimits {
        max_file_bytes: 0,
        max_total_bytes: 5,
    };
    let mut log = LogFile::open(dir.path(), "stdout.txt", limits);
    log.write(b"abc");
    log.finish();
    log.write(b"defghij\n");
    log.finish();
    let text = read(&dir.path().join("stdout.txt"));
    assert_eq!(
        text,
        "abc\n[hatchway] 1 lines (8 bytes) dropped: this log reached its limit of 5 bytes\n"
    );
}

#[test]
fn an_endless_line_is_written_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path(), "stdout.txt", NO_LIMITS);
    log.write(&vec![b'x'; MAX_LINE_BYTES * 2 + 10]);
    log.flush();
    assert_eq!(read(&dir.path().join("stdout.txt")).len(), MAX_LINE_BYTES * 2);
    log.finish();
    assert_eq!(
        read(&dir.path().join("stdout.txt")).len(),
        MAX_LINE_BYTES * 2 + 10
    );
}

#[test]
fn a_full_queue_drops_chunks_instead_of_blocking_and_counts_them() {
    let queue = Queue::new(10);
    assert!(queue.offer(b"12345"));
    assert!(queue.offer(b"67890"));
    assert!(!queue.offer(b"x"), "over budget: dropped");
    assert!(!queue.offer(b"yz"));
    let batch = queue.take();
    assert_eq!(batch.chunks, vec![b"12345".to_vec(), b"67890".to_vec()]);
    assert_eq!(batch.dropped, 3);
    assert!(!batch.last);
    assert!(queue.offer(b"again"), "taking a batch frees the budget");
    queue.close();
    let batch = queue.take();
    assert!(batch.last && batch.chunks.len() == 1);
}

#[test]
fn output_the_writer_missed_is_marked_where_it_went_missing() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(8);
    queue.offer(b"first\n");
    queue.offer(b"lost line\n");
    queue.offer(b"also lost\n");
    let mut log = LogFile::open(dir.path(), "stdout.txt", NO_LIMITS);
    let writer = std::thread::scope(|scope| {
        let handle = scope.spawn(|| run_writer(&queue, &mut log));
        // Wait for the writer to drain the first batch before queueing more.
        let path = dir.path().join("stdout.txt");
        let start = Instant::now();
        while read(&path) != "first\n" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the writer never flushed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        queue.offer(b"later\n");
        queue.close();
        handle.join()
    });
    writer.unwrap();
    assert_eq!(
        read(&dir.path().join("stdout.txt")),
        "first\n[hatchway] about 20 bytes of output dropped here: the log writer fell behind\nlater\n"
    );
}

#[test]
fn a_pipe_reader_keeps_draining_when_the_disk_writer_is_stuck() {
    // No writer ever takes from this queue: the disk is "stuck". The
    // command's writes must still complete, well past the queue budget.
    let queue = Arc::new(Queue::new(64 * 1024));
    let (reader, mut writer) = std::io::pipe().unwrap();
    let pump_queue = Arc::clone(&queue);
    let pump_thread = std::thread::spawn(move || pump(reader, None, &pump_queue));
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..64 {
            writer.write_all(&chunk).unwrap();
        }
        drop(writer);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("4 MiB of output went through although nothing wrote it to disk");
    pump_thread.join().unwrap();
    let batch = queue.take();
    let queued: usize = batch.chunks.iter().map(Vec::len).sum();
    assert_eq!(queued as u64 + batch.dropped, 64 * 64 * 1024);
    assert!(batch.dropped > 0);
}

#[test]
fn a_full_disk_drops_output_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("stdout.txt")).unwrap();
    let mut log = LogFile::open(dir.path(), "stdout.txt", NO_LIMITS);
    for _ in 0..1000 {
        log.write(b"this line does not fit on the disk\n");
        log.flush();
    }
    log.finish();
    assert!(
        log.lost > 0,
        "what could not be written is counted, to be reported later"
    );
}

#[test]
fn the_tee_copies_to_the_own_output_and_the_file_and_finishes_at_eof() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let own_path = dir.path().join("own");
    let own = File::create(&own_path).unwrap();
    let tee = Tee::start(
        dir.path(),
        NO_LIMITS,
        vec![Stream {
            pipe: Box::new(reader),
            own: Some(own),
            name: "stdout.txt",
        }],
    )
    .unwrap();
    writer.write_all(b"hello\nno newline").unwrap();
    drop(writer);
    assert!(tee.finish(Duration::from_secs(10)));
    assert_eq!(read(&dir.path().join("stdout.txt")), "hello\nno newline");
    assert_eq!(read(&own_path), "hello\nno newline");
}

#[test]
fn the_tee_stops_waiting_for_a_pipe_someone_else_holds_open() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let tee = Tee::start(
        dir.path(),
        NO_LIMITS,
        vec![Stream {
            pipe: Box::new(reader),
            own: None,
            name: "stdout.txt",
        }],
    )
    .unwrap();
    writer.write_all(b"written before exit\n").unwrap();
    // `writer` stays open, like a pipe inherited by a background daemon.
    // Wait until the line is through, so the test is about the pipe
    // staying open and not about a race with the reader.
    let start = Instant::now();
    while read(&dir.path().join("stdout.txt")).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !tee.finish(Duration::from_millis(200)),
        "finish reports it gave up on the pipe"
    );
    assert_eq!(read(&dir.path().join("stdout.txt")), "written before exit\n");
    drop(writer);
}
