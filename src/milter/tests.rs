use super::*;

#[test]
fn our_fields_go_on_top_in_order_and_forged_results_go() {
    let marks = SpamMarks {
        top: "Authentication-Results: mx.test; spf=pass\r\nX-Spam-Score: 6.0\r\nX-Spam-Status: Yes, score=6.0\r\n\ttests=A,B\r\n".into(),
        authserv_id: Some("mx.test".into()),
        subject_prefix: Some("[SPAM]".into()),
        quarantine: false,
        score: 6.0,
    };
    let headers = vec![
        (
            "Authentication-Results".to_string(),
            b" other.example; spf=fail".to_vec(),
        ),
        ("Subject".to_string(), b" hello".to_vec()),
        ("Authentication-Results".to_string(), b" mx.test; dkim=pass".to_vec()),
    ];
    let got = header_changes(&marks, &headers, step::HEADER_LEADING_SPACE);
    assert_eq!(
        got,
        vec![
            Response::ChangeHeader {
                index: 2,
                name: "Authentication-Results".into(),
                value: String::new()
            },
            Response::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: " [SPAM] hello".into()
            },
            Response::InsertHeader {
                index: 0,
                name: "X-Spam-Status".into(),
                value: " Yes, score=6.0\n\ttests=A,B".into()
            },
            Response::InsertHeader {
                index: 0,
                name: "X-Spam-Score".into(),
                value: " 6.0".into()
            },
            Response::InsertHeader {
                index: 0,
                name: "Authentication-Results".into(),
                value: " mx.test; spf=pass".into()
            },
        ]
    );
    // Without the leading space: values as Sendmail's milters get them.
    let plain = header_changes(
        &SpamMarks {
            subject_prefix: None,
            ..marks
        },
        &[],
        0,
    );
    assert_eq!(
        plain.last(),
        Some(&Response::InsertHeader {
            index: 0,
            name: "Authentication-Results".into(),
            value: "mx.test; spf=pass".into()
        })
    );
}

#[test]
fn folded_values_get_crlf() {
    let mut out = Vec::new();
    crlf_into(b" a\n\tb\r\n\tc", &mut out);
    assert_eq!(out, b" a\r\n\tb\r\n\tc");
}
