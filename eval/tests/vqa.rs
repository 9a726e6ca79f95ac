//! VQA accuracy against the official vqaEval's own numbers (`fixtures/vqa_accuracy_oracle`: 400
//! questions scored by vqaEval.py a013f00), the VQA v2 file formats, and every refused input.
use std::path::{Path, PathBuf};

use cm3_eval::EvalError;
use cm3_eval::vqa::{
    Annotation, Annotations, Answer, Prediction, Results, evaluate, evaluate_files,
    normalize_answer, py_round, read_annotations, read_results,
};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqa_accuracy_oracle/questions.jsonl")
}

/// An annotation with VQA's answer ids 1..n.
fn annotation(id: u64, answers: &[&str], qtype: &str, atype: &str) -> Annotation {
    Annotation {
        question_id: id,
        image_id: Some(id * 10),
        question_type: qtype.into(),
        answer_type: atype.into(),
        multiple_choice_answer: None,
        answers: answers
            .iter()
            .zip(1..)
            .map(|(a, i)| Answer {
                answer: (*a).into(),
                answer_id: i,
            })
            .collect(),
    }
}

struct Oracle {
    annotations: Annotations,
    results: Results,
    accuracy: Vec<f64>,
}

fn oracle() -> Oracle {
    let text = std::fs::read_to_string(fixture()).expect("oracle fixture");
    let mut annotations = Vec::new();
    let mut results = Vec::new();
    let mut accuracy = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).expect("oracle line");
        let id = v["question_id"].as_u64().expect("question_id");
        let answers: Vec<&str> = v["answers"]
            .as_array()
            .expect("answers")
            .iter()
            .map(|a| a.as_str().expect("answer string"))
            .collect();
        // Three answer types and five question types, to exercise the averages.
        let atype = ["yes/no", "number", "other"][i % 3];
        let qtype = format!("type {}", i % 5);
        annotations.push(annotation(id, &answers, &qtype, atype));
        results.push(Prediction {
            question_id: id,
            answer: v["prediction"].as_str().expect("prediction").into(),
        });
        accuracy.push(v["accuracy"].as_f64().expect("accuracy"));
    }
    Oracle {
        annotations: Annotations {
            source: "oracle annotations".into(),
            annotations,
        },
        results: Results {
            source: "oracle results".into(),
            results,
        },
        accuracy,
    }
}

#[test]
fn every_question_scores_as_the_official_vqa_eval() {
    let o = oracle();
    assert_eq!(o.accuracy.len(), 400);
    let scores = evaluate(&o.annotations, &o.results).expect("evaluate");
    let mut disagree = Vec::new();
    for (q, want) in scores.questions.iter().zip(&o.accuracy) {
        if py_round(q.accuracy, 4) != *want {
            disagree.push(format!(
                "question {}: {} (compared {:?}), vqaEval {want}",
                q.question_id, q.accuracy, q.compared
            ));
        }
    }
    assert!(
        disagree.is_empty(),
        "{}/400 agree; disagreeing:\n{}",
        400 - disagree.len(),
        disagree.join("\n")
    );
    // The averages are the means of the per-question numbers, rounded to 2 decimals.
    let mean = o.accuracy.iter().sum::<f64>() / o.accuracy.len() as f64;
    assert!(
        (scores.accuracy - mean).abs() <= 0.005 + 1e-9,
        "{} vs {mean}",
        scores.accuracy
    );
    for (atype, k) in [("yes/no", 0), ("number", 1), ("other", 2)] {
        let sel: Vec<f64> = o.accuracy.iter().skip(k).step_by(3).copied().collect();
        let mean = sel.iter().sum::<f64>() / sel.len() as f64;
        let (got, n) = scores.per_answer_type[atype];
        assert_eq!(n, sel.len());
        assert!(
            (got - mean).abs() <= 0.005 + 1e-9,
            "{atype}: {got} vs {mean}"
        );
    }
    assert_eq!(scores.per_question_type.len(), 5);
}

#[test]
fn answers_are_normalised_as_vqa_eval_processes_them() {
    let cases = [
        // Periods go unless a digit follows; number words become digits; articles go.
        ("Two dogs.", "2 dogs"),
        ("3.5", "3.5"),
        ("a.b", "ab"),
        ("The Cat", "cat"),
        ("none", "0"),
        // A mark touching a space is deleted, otherwise it becomes a space...
        ("red, white", "red white"),
        ("red/white", "red white"),
        ("red / white", "red white"),
        ("tennis_racket", "tennis racket"),
        // ...and all are deleted when a digit-comma-digit is anywhere.
        ("1,000", "1000"),
        ("1,000 red/white", "1000 redwhite"),
        // Contractions get their apostrophe; the apostrophe itself is no punctuation.
        ("dont", "don't"),
        ("It's", "it's"),
        ("somebody'd", "somebodyd"),
        // Tabs, newlines and Python's white space (including U+001F) separate words.
        ("\tyes\n", "yes"),
        ("left\u{1f}side", "left side"),
        // A Unicode digit (Arabic-Indic) keeps the period before it, as Python's \d does.
        ("\u{663}.\u{665}", "\u{663}.\u{665}"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_answer(input), want, "{input:?}");
    }
    // re.UNICODE lands in sub's `count`: only the first 32 periods not before a digit go.
    let dots = ".".repeat(40);
    assert_eq!(
        normalize_answer(&format!("x{dots}y")),
        format!("x{}y", ".".repeat(8))
    );
}

/// A VQA v2 annotations file and a results file, written as the official tools read them.
fn write_v2(dir: &Path) -> (PathBuf, PathBuf) {
    let ann = |id: u64, qtype: &str, atype: &str, answers: &[&str]| {
        json!({
            "question_id": id, "image_id": 100 + id, "question_type": qtype,
            "answer_type": atype, "multiple_choice_answer": answers[0],
            "answers": answers.iter().zip(1..).map(|(a, i)| json!({
                "answer": a, "answer_confidence": "yes", "answer_id": i
            })).collect::<Vec<_>>(),
        })
    };
    let annotations = json!({
        "info": {}, "license": {}, "data_subtype": "val2014",
        "annotations": [
            ann(1, "is the", "yes/no", &["yes"; 10]),
            ann(2, "how many", "number",
                &["2", "2", "two", "2 ", "3", "3", "3", "3", "3", "3"]),
            ann(3, "what color", "other",
                &["red", "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue"]),
        ],
    });
    let results = json!([
        {"question_id": 1, "answer": "Yes"},
        {"question_id": 2, "answer": "Two."},
        {"question_id": 3, "answer": "red"},
    ]);
    let (a, r) = (dir.join("annotations.json"), dir.join("results.json"));
    std::fs::write(&a, annotations.to_string()).expect("write");
    std::fs::write(&r, results.to_string()).expect("write");
    (a, r)
}

#[test]
fn vqa_v2_files_are_read_and_reported_with_vqa_eval_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, r) = write_v2(dir.path());
    let scores = evaluate_files(&a, &r, None).expect("evaluate");
    let acc: Vec<f64> = scores.questions.iter().map(|q| q.accuracy).collect();
    // 1: all humans say "yes", so nothing is normalised and "Yes" matches none (vqaEval's quirk).
    // 2: the answers differ, so "Two." -> "2" matches 4 answers ("2 " is stripped): 100.
    // 3: "red" matches 2: each red left out leaves 1 (1/3), each blue 2 (2/3): (2/3+16/3)/10.
    assert_eq!(acc[0], 0.0);
    assert_eq!(acc[1], 100.0);
    assert!((acc[2] - 60.0).abs() < 1e-12, "{}", acc[2]);
    assert_eq!(scores.questions[1].compared, "2");
    assert_eq!(scores.questions[0].compared, "Yes");
    // (0 + 1 + 0.6) / 3 * 100 = 53.333.., reported with 2 decimals.
    assert_eq!(scores.accuracy, 53.33);
    let j = scores.to_json();
    assert_eq!(j["accuracy"]["overall"], json!(53.33));
    assert_eq!(j["accuracy"]["perAnswerType"]["yes/no"], json!(0.0));
    assert_eq!(j["accuracy"]["perAnswerType"]["number"], json!(100.0));
    assert_eq!(j["accuracy"]["perQuestionType"]["what color"], json!(60.0));
    assert_eq!(j["questions"], json!(3));
    assert_eq!(scores.eval_qa()["3"], json!(60.0));
    let table = scores.table();
    for needle in ["53.33", "yes/no", "what color", "60.00", "3 questions"] {
        assert!(table.contains(needle), "{needle} not in\n{table}");
    }
    // The reading functions give the same as evaluate_files.
    let again = evaluate(
        &read_annotations(&a).expect("annotations"),
        &read_results(&r).expect("results"),
    )
    .expect("evaluate");
    assert_eq!(again, scores);
}

#[test]
fn fewer_or_more_answers_than_ten_use_the_same_leave_one_out_mean() {
    let anns = Annotations {
        source: "a".into(),
        annotations: vec![
            annotation(1, &["cat"], "t", "other"),
            annotation(2, &["cat", "cat", "cat", "cat"], "t", "other"),
            annotation(3, &["cat", "dog", "cat", "cat"], "t", "other"),
        ],
    };
    let res = Results {
        source: "r".into(),
        results: (1..=3)
            .map(|i| Prediction {
                question_id: i,
                answer: "cat".into(),
            })
            .collect(),
    };
    let s = evaluate(&anns, &res).expect("evaluate");
    // One answer: nothing is left to match. Four equal: 3 left each time. 3 cats and a dog:
    // each cat left out leaves 2 (2/3), the dog 3 (1): (3*2/3 + 1)/4.
    assert_eq!(s.questions[0].accuracy, 0.0);
    assert_eq!(s.questions[1].accuracy, 100.0);
    assert!((s.questions[2].accuracy - 75.0).abs() < 1e-12);
}

fn input_error(err: EvalError) -> (String, String) {
    match err {
        EvalError::Input { what, reason } => (what, reason),
        other => panic!("expected an input error, got {other}"),
    }
}

#[test]
fn results_must_answer_exactly_the_annotated_questions_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, r) = write_v2(dir.path());
    let anns = read_annotations(&a).expect("annotations");
    let good = read_results(&r).expect("results");

    let mut unknown = good.clone();
    unknown.results.push(Prediction {
        question_id: 99,
        answer: "x".into(),
    });
    let (what, reason) = input_error(evaluate(&anns, &unknown).expect_err("unknown"));
    assert!(
        what.contains("results.json") && what.contains("question 99"),
        "{what}"
    );
    assert!(
        reason.contains("not a question of") && reason.contains("annotations.json"),
        "{reason}"
    );

    let mut twice = good.clone();
    twice.results.push(Prediction {
        question_id: 2,
        answer: "3".into(),
    });
    let (what, reason) = input_error(evaluate(&anns, &twice).expect_err("duplicate"));
    assert!(
        what.ends_with("question 2") && reason.contains("more than once"),
        "{what}: {reason}"
    );

    let mut missing = good.clone();
    missing.results.remove(0);
    let (what, reason) = input_error(evaluate(&anns, &missing).expect_err("missing"));
    assert!(what.ends_with("question 1"), "{what}");
    assert!(
        reason.contains("no answer for 1 of the 3") && reason.contains("exactly"),
        "{reason}"
    );
}

#[test]
fn malformed_annotations_are_refused_naming_the_question() {
    let res = |ids: &[u64]| Results {
        source: "r".into(),
        results: ids
            .iter()
            .map(|&i| Prediction {
                question_id: i,
                answer: "a".into(),
            })
            .collect(),
    };
    let anns = |annotations| Annotations {
        source: "anns.json".into(),
        annotations,
    };
    let (what, reason) = input_error(
        evaluate(&anns(vec![annotation(7, &[], "t", "other")]), &res(&[7])).expect_err("empty"),
    );
    assert_eq!(what, "anns.json question 7");
    assert!(reason.contains("no human answers"), "{reason}");

    let mut dup_id = annotation(8, &["a", "b"], "t", "other");
    dup_id.answers[1].answer_id = 1;
    let (what, reason) =
        input_error(evaluate(&anns(vec![dup_id]), &res(&[8])).expect_err("dup answer id"));
    assert_eq!(what, "anns.json question 8");
    assert!(reason.contains("answer_id 1 appears twice"), "{reason}");

    let two = vec![
        annotation(9, &["a"], "t", "other"),
        annotation(9, &["b"], "t", "other"),
    ];
    let (what, reason) =
        input_error(evaluate(&anns(two), &res(&[9])).expect_err("annotated twice"));
    assert_eq!(what, "anns.json question 9");
    assert!(reason.contains("annotated twice"), "{reason}");

    let (what, _) = input_error(evaluate(&anns(vec![]), &res(&[])).expect_err("no questions"));
    assert_eq!(what, "anns.json");
}

#[test]
fn unreadable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, r) = write_v2(dir.path());
    let missing = dir.path().join("nope.json");
    let err = evaluate_files(&missing, &r, None).expect_err("missing file");
    assert!(
        matches!(err, EvalError::Io { .. }) && err.to_string().contains("nope.json"),
        "{err}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"annotations\": [").expect("write");
    let err = evaluate_files(&bad, &r, None).expect_err("truncated");
    assert!(
        matches!(err, EvalError::Json { .. }) && err.to_string().contains("bad.json"),
        "{err}"
    );

    // Results must be an array of {question_id, answer}; a string id is refused.
    std::fs::write(&bad, r#"{"question_id": 1, "answer": "yes"}"#).expect("write");
    assert!(matches!(
        evaluate_files(&a, &bad, None),
        Err(EvalError::Json { .. })
    ));
    std::fs::write(&bad, r#"[{"question_id": "1", "answer": "yes"}]"#).expect("write");
    assert!(matches!(
        evaluate_files(&a, &bad, None),
        Err(EvalError::Json { .. })
    ));
}

#[test]
fn a_questions_file_must_cover_the_annotations_and_holds_multiple_choices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, r) = write_v2(dir.path());
    let q = dir.path().join("questions.json");
    let question = |id: u64, choices: &[&str]| {
        json!({"question_id": id, "image_id": 100 + id, "question": "?",
               "multiple_choices": choices})
    };
    let open_ended = json!({"task_type": "Open-Ended", "questions": [
        question(1, &[]), question(2, &[]), question(3, &[])]});
    std::fs::write(&q, open_ended.to_string()).expect("write");
    let with = evaluate_files(&a, &r, Some(&q)).expect("with questions");
    assert_eq!(
        with.accuracy,
        evaluate_files(&a, &r, None).expect("without").accuracy
    );

    let short =
        json!({"task_type": "Open-Ended", "questions": [question(1, &[]), question(2, &[])]});
    std::fs::write(&q, short.to_string()).expect("write");
    let (what, reason) = input_error(evaluate_files(&a, &r, Some(&q)).expect_err("uncovered"));
    assert!(
        what.ends_with("question 3") && reason.contains("questions.json"),
        "{what}: {reason}"
    );

    let mc = json!({"task_type": "Multiple Choice", "questions": [
        question(1, &["Yes", "no"]), question(2, &["Two.", "3"]), question(3, &["blue", "green"])]});
    std::fs::write(&q, mc.to_string()).expect("write");
    let (what, reason) = input_error(evaluate_files(&a, &r, Some(&q)).expect_err("not a choice"));
    assert!(what.ends_with("question 3"), "{what}");
    assert!(
        reason.contains("\"red\" is not one of the multiple choices"),
        "{reason}"
    );
}
