//! Transcripts: a seed, settings and a sequence of orders in; every
//! resolution and the views out, as snapshots a reviewer can read.

use serde_json::{Value, json};
use turnbase_engines::{conquest::Conquest, reversi::Reversi};

use crate::{setup, world};

#[test]
fn conquest_three_players_one_bot() {
    let w = world(Conquest);
    let settings = json!({"map_size": 30, "planets": 10, "turn_limit": 6, "range": 18});
    w.host
        .init("t", setup(11, settings, &[false, false, true]))
        .expect("init");
    let mut transcript =
        vec![json!({"view p1, turn 1": w.host.view("t", "p1", None).expect("view").view})];
    for turn in 1..=6 {
        // p1 plays the example (half its ships to the nearest planet), p2
        // holds, p3 is the engine's bot.
        let options = w.host.options("t", "p1").expect("options");
        if let Some(example) = options.example.clone() {
            w.host
                .orders("t", "p1", turn, example.clone(), false)
                .expect("p1's orders");
            transcript.push(json!({format!("p1 orders, turn {turn}"): example}));
        }
        let resolution = w.host.resolve("t", turn).expect("resolve");
        let finished = resolution.finished;
        transcript.push(json!({format!("resolution {turn}"): resolution}));
        if finished {
            break;
        }
    }
    transcript
        .push(json!({"view p2 at the end": w.host.view("t", "p2", None).expect("view").view}));
    transcript.push(json!({"state at the end": w.host.state("t").expect("state")}));
    insta::assert_json_snapshot!(Value::Array(transcript));
}

#[test]
fn reversi_moves_passes_and_a_timeout() {
    let w = world(Reversi);
    w.host
        .init(
            "r",
            setup(
                3,
                json!({"first": "first_seat", "timeout": "pass"}),
                &[false, false],
            ),
        )
        .expect("init");
    let mut transcript = Vec::new();
    let moves = ["d3", "c3", "c4", "e3", "f4"];
    let mut turn = 1;
    for square in moves {
        let mover = w.host.state("r").expect("state").to_move[0].clone();
        let answer = w
            .host
            .orders("r", &mover, turn, json!([{"square": square}]), false)
            .expect("a legal move");
        transcript.push(json!({format!("{mover} plays {square}"): answer.resolution}));
        turn += 1;
    }
    // The clock runs out on the player to move: the pass rule.
    let timeout = w.host.resolve("r", turn).expect("timeout");
    transcript.push(json!({format!("turn {turn} times out"): timeout}));
    transcript.push(json!({"view p1": w.host.view("r", "p1", None).expect("view")}));
    insta::assert_json_snapshot!(Value::Array(transcript));
}

#[test]
fn reversi_forfeit_ends_the_game() {
    let w = world(Reversi);
    w.host
        .init(
            "f",
            setup(
                5,
                json!({"first": "first_seat", "timeout": "forfeit"}),
                &[false, true],
            ),
        )
        .expect("init");
    let resolution = w.host.resolve("f", 1).expect("timeout");
    insta::assert_json_snapshot!(resolution);
}
