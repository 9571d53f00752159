use super::*;

#[test]
fn exit_code_is_the_code_or_128_plus_the_signal() {
    assert_eq!(ExitStatus::exited(0).exit_code(), 0);
    assert_eq!(ExitStatus::exited(3).exit_code(), 3);
    assert_eq!(ExitStatus::signaled(9).exit_code(), 137);
}

#[test]
fn messages_have_the_documented_json_shape() {
    let spawned = serde_json::to_value(ServerMessage::Spawned {
        pid: 42,
        io: IoKind::Pty,
        agent: None,
        agent_error: None,
    })
    .unwrap();
    assert_eq!(
        spawned,
        serde_json::json!({"type": "spawned", "pid": 42, "io": "pty"})
    );
    let with_agent = serde_json::to_value(ServerMessage::Spawned {
        pid: 7,
        io: IoKind::Pipes,
        agent: Some("/tmp/hatchway-agent-x/agent.sock".into()),
        agent_error: None,
    })
    .unwrap();
    assert_eq!(
        with_agent,
        serde_json::json!({"type": "spawned", "pid": 7, "io": "pipes",
            "agent": "/tmp/hatchway-agent-x/agent.sock"})
    );
    let exited = serde_json::to_value(ServerMessage::Exited {
        code: None,
        signal: Some(15),
    })
    .unwrap();
    assert_eq!(
        exited,
        serde_json::json!({"type": "exited", "code": null, "signal": 15})
    );
    let signal = serde_json::to_value(ClientMessage::Signal { signal: 2 }).unwrap();
    assert_eq!(signal, serde_json::json!({"type": "signal", "signal": 2}));
}

#[test]
fn a_spawn_request_may_omit_every_field() {
    let parsed: ClientMessage = serde_json::from_str(r#"{"type":"spawn"}"#).unwrap();
    assert_eq!(parsed, ClientMessage::Spawn(SpawnRequest::default()));
    let full = ClientMessage::Spawn(SpawnRequest {
        argv: Some(vec!["ls".into(), "-l".into()]),
        command: None,
        env: vec![("LANG".into(), "C.UTF-8".into())],
        cwd: Some("/tmp".into()),
        user: Some("nobody".into()),
        pty: Some(PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        }),
        helper: None,
        agent: true,
    });
    let round: ClientMessage = serde_json::from_slice(&serde_json::to_vec(&full).unwrap()).unwrap();
    assert_eq!(round, full);
}

#[test]
fn a_helper_is_named_in_kebab_case_and_unknown_helpers_are_refused() {
    let parsed: ClientMessage = serde_json::from_str(r#"{"type":"spawn","helper":"sftp-server"}"#).unwrap();
    assert_eq!(
        parsed,
        ClientMessage::Spawn(SpawnRequest {
            helper: Some(Helper::SftpServer),
            ..SpawnRequest::default()
        })
    );
    assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"spawn","helper":"/bin/sh"}"#).is_err());
}

#[test]
fn frames_split_only_when_complete() {
    let mut buf = encode(&ClientMessage::Signal { signal: 1 });
    buf.extend_from_slice(&encode(&ClientMessage::Signal { signal: 2 }));
    let whole = buf.clone();
    let mut partial = whole[..5].to_vec();
    assert_eq!(
        take_frame(&mut partial, 100).unwrap(),
        None,
        "half a frame is not a frame"
    );
    let first = take_frame(&mut buf, 100).unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<ClientMessage>(&first).unwrap(),
        ClientMessage::Signal { signal: 1 }
    );
    let second = take_frame(&mut buf, 100).unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<ClientMessage>(&second).unwrap(),
        ClientMessage::Signal { signal: 2 }
    );
    assert!(buf.is_empty());
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_read() {
    let mut buf = ((MAX_REQUEST_BYTES + 1) as u32).to_be_bytes().to_vec();
    assert!(take_frame(&mut buf, MAX_REQUEST_BYTES).is_err());
}

#[tokio::test]
async fn frames_read_from_a_stream_end_cleanly_at_eof() {
    let mut data = encode(&ClientMessage::Signal { signal: 7 });
    data.extend_from_slice(&encode(&ClientMessage::Signal { signal: 8 }));
    let mut reader = &data[..];
    assert!(read_frame(&mut reader, 100).await.unwrap().is_some());
    assert!(read_frame(&mut reader, 100).await.unwrap().is_some());
    assert!(read_frame(&mut reader, 100).await.unwrap().is_none());
    let truncated = &encode(&ClientMessage::Signal { signal: 9 })[..6];
    let mut reader = truncated;
    assert!(
        read_frame(&mut reader, 100).await.is_err(),
        "a frame cut short is an error, not EOF"
    );
}
