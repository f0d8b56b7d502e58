//! Accuracy of the whole spam score (rules + classifier) by k-fold
//! cross-validation: the classifier is trained on the other folds, each
//! message is scored once, and the report gives spam recall and ham false
//! positives per threshold (the curve) and per group of messages.
//! `sluice learn --cross-validate K` prints it for a site's own mail;
//! docs/SPAM-QUALITY.md has it for the shared SpamAssassin sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::bayes::Model;
use super::filter::SpamFilter;
use super::ngram;
use super::tokenize;

/// One labelled message.
pub struct Sample {
    /// A name for the list of mistakes (e.g. the file).
    pub name: String,
    pub raw: Vec<u8>,
    /// A name for the report (e.g. "easy_ham", or the directory).
    pub group: String,
    pub spam: bool,
}

/// Scores from cross-validation, in the order of the samples.
pub struct Scores {
    pub names: Vec<String>,
    pub scores: Vec<f64>,
    /// Why: the classifier's probability and the rules that hit.
    pub why: Vec<String>,
    pub spam: Vec<bool>,
    pub groups: Vec<String>,
    /// The classifier's spam probability, when it had an opinion.
    pub bayes: Vec<Option<f64>>,
    /// The n-gram classifier's, likewise.
    pub ngram: Vec<Option<f64>>,
}

/// Scores every sample with a model trained on the other folds (sample
/// `i` is in fold `i % folds`). With `bayes` false the classifier is left
/// out (rules alone).
pub fn cross_validate(filter: &SpamFilter, samples: &[Sample], folds: usize, bayes: bool) -> Scores {
    let folds = folds.max(2);
    let tokens: Vec<Vec<String>> = if bayes {
        samples
            .iter()
            .map(|s| tokenize::tokens_upto(&s.raw, filter.cfg.part_scan_size))
            .collect()
    } else {
        Vec::new()
    };
    let features: Vec<ngram::Packed> = if bayes {
        samples.iter().map(|s| ngram::Features::of(&s.raw).pack()).collect()
    } else {
        Vec::new()
    };
    let mut scores = vec![0.0; samples.len()];
    let mut why = vec![String::new(); samples.len()];
    let mut probs = vec![None; samples.len()];
    let mut ngram_probs = vec![None; samples.len()];
    for k in 0..folds {
        if bayes {
            let mut model = Model::new();
            let mut batch = Vec::new();
            for (i, s) in samples.iter().enumerate() {
                if i % folds != k {
                    model.learn(&tokens[i], s.spam);
                    batch.push((&features[i], s.spam));
                }
            }
            model.ngram_mut().train(&batch);
            filter.set_model(Some(model));
        } else {
            filter.set_model(None);
        }
        for (i, s) in samples.iter().enumerate() {
            if i % folds == k {
                let scored = filter.score_offline(&s.raw);
                scores[i] = scored.score;
                why[i] = scored.rule_names();
                probs[i] = scored.bayes;
                ngram_probs[i] = scored.ngram;
            }
        }
    }
    Scores {
        names: samples.iter().map(|s| s.name.clone()).collect(),
        scores,
        why,
        spam: samples.iter().map(|s| s.spam).collect(),
        groups: samples.iter().map(|s| s.group.clone()).collect(),
        bayes: probs,
        ngram: ngram_probs,
    }
}

/// The largest ham false-positive rate of the operating points the report
/// gives besides the threshold.
pub const MAX_FP: f64 = 0.005;

impl Scores {
    /// (spam recall, ham false-positive rate) at a threshold (score >= t
    /// is flagged).
    pub fn rates(&self, t: f64) -> (f64, f64) {
        rates_of(&self.scores, &self.spam, t)
    }

    /// The lowest threshold at which at most `max_fp` of the ham is
    /// flagged (score >= threshold), with (spam recall, ham false-positive
    /// rate) there: the best recall at that false-positive rate. Chosen
    /// after the fact on these scores, so it is optimistic for other mail.
    pub fn at_fp(&self, max_fp: f64) -> (f64, f64, f64) {
        let t = threshold_at_fp(&self.scores, &self.spam, max_fp);
        let (r, f) = self.rates(t);
        (t, r, f)
    }

    /// The Bayes classifier alone: [`Scores::at_fp`] of its probability
    /// (messages it had no opinion on count as 0.5), or None without any opinion.
    pub fn bayes_at_fp(&self, max_fp: f64) -> Option<(f64, f64, f64)> {
        self.alone_at_fp(&self.bayes, max_fp)
    }

    /// The n-gram classifier alone, likewise.
    pub fn ngram_at_fp(&self, max_fp: f64) -> Option<(f64, f64, f64)> {
        self.alone_at_fp(&self.ngram, max_fp)
    }

    fn alone_at_fp(&self, probs: &[Option<f64>], max_fp: f64) -> Option<(f64, f64, f64)> {
        if probs.iter().all(Option::is_none) {
            return None;
        }
        let p: Vec<f64> = probs.iter().map(|p| p.unwrap_or(0.5)).collect();
        let t = threshold_at_fp(&p, &self.spam, max_fp);
        let (r, f) = rates_of(&p, &self.spam, t);
        Some((t, r, f))
    }

    /// Per group: (messages, flagged at `t`).
    pub fn groups(&self, t: f64) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for ((score, g), _) in self.scores.iter().zip(&self.groups).zip(&self.spam) {
            let e = out.entry(g.clone()).or_default();
            e.0 += 1;
            e.1 += usize::from(*score >= t);
        }
        out
    }

    /// A Markdown report: per group at `threshold` and at the best
    /// threshold with at most [`MAX_FP`] ham false positives, then the
    /// curve, then each classifier alone at that false-positive rate.
    pub fn report(&self, threshold: f64) -> String {
        let mut s = String::new();
        let (recall, fp) = self.rates(threshold);
        let _ = writeln!(
            s,
            "At the threshold {threshold}: spam recall {:.1} %, ham false positives {:.2} %",
            recall * 100.0,
            fp * 100.0
        );
        let (best, best_recall, best_fp) = self.at_fp(MAX_FP);
        let _ = writeln!(
            s,
            "At ham false positives <= {:.1} % (score >= {best:.2}): spam recall {:.1} %, ham false positives {:.2} %\n",
            MAX_FP * 100.0,
            best_recall * 100.0,
            best_fp * 100.0
        );
        let _ = writeln!(
            s,
            "| group | messages | flagged at {threshold} | share | flagged at {best:.2} | share |\n|---|---:|---:|---:|---:|---:|"
        );
        let at_best = self.groups(best);
        for (g, (n, flagged)) in self.groups(threshold) {
            let b = at_best.get(&g).map_or(0, |e| e.1);
            let _ = writeln!(
                s,
                "| {g} | {n} | {flagged} | {:.1} % | {b} | {:.1} % |",
                ratio(flagged, n) * 100.0,
                ratio(b, n) * 100.0
            );
        }
        let _ = writeln!(
            s,
            "\n| threshold | spam recall | ham false positives |\n|---:|---:|---:|"
        );
        for t in [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0] {
            let (r, f) = self.rates(t);
            let _ = writeln!(s, "| {t:.1} | {:.1} % | {:.2} % |", r * 100.0, f * 100.0);
        }
        let mut first = true;
        for (name, alone) in [
            ("Classifier (Bayes)", self.bayes_at_fp(MAX_FP)),
            ("N-gram classifier", self.ngram_at_fp(MAX_FP)),
        ] {
            let Some((t, r, f)) = alone else { continue };
            let _ = writeln!(
                s,
                "{}{name} alone at ham false positives <= {:.1} % (P >= {t:.4}): spam recall {:.1} %, ham false positives {:.2} %",
                if first { "\n" } else { "" },
                MAX_FP * 100.0,
                r * 100.0,
                f * 100.0
            );
            first = false;
        }
        s
    }

    /// The mistakes at `threshold`: ham flagged, then spam missed, each
    /// with its score, worst first.
    pub fn mistakes(&self, threshold: f64) -> String {
        let mut s = String::new();
        for (want_spam, title) in [(false, "ham flagged as spam"), (true, "spam missed")] {
            let mut list: Vec<(f64, &str, &str)> = (0..self.scores.len())
                .filter(|&i| self.spam[i] == want_spam && (self.scores[i] >= threshold) != want_spam)
                .map(|i| (self.scores[i], self.names[i].as_str(), self.why[i].as_str()))
                .collect();
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !want_spam {
                list.reverse();
            }
            let _ = writeln!(s, "{title} ({}):", list.len());
            for (score, name, why) in list {
                let _ = writeln!(s, "  {score:7.2}  {name}  {why}");
            }
        }
        s
    }
}

/// (spam recall, ham false-positive rate) of `scores` at `t` (score >= t is flagged).
fn rates_of(scores: &[f64], spam: &[bool], t: f64) -> (f64, f64) {
    let (mut nspam, mut caught, mut ham, mut fp) = (0usize, 0usize, 0usize, 0usize);
    for (score, is_spam) in scores.iter().zip(spam) {
        let flagged = *score >= t;
        if *is_spam {
            nspam += 1;
            caught += usize::from(flagged);
        } else {
            ham += 1;
            fp += usize::from(flagged);
        }
    }
    (ratio(caught, nspam), ratio(fp, ham))
}

/// The lowest score `t` such that flagging `score >= t` flags at most
/// `max_fp` of the ham: the lowest score above the ham that must pass
/// (above every score when no ham may be flagged and ham has the top one).
fn threshold_at_fp(scores: &[f64], spam: &[bool], max_fp: f64) -> f64 {
    let mut ham: Vec<f64> = scores.iter().zip(spam).filter(|(_, s)| !**s).map(|(x, _)| *x).collect();
    ham.sort_by(|a, b| b.total_cmp(a));
    // At most `allowed` ham may be flagged (a little slack against rounding: 0.005 * 400 is 2).
    let allowed = (max_fp * ham.len() as f64 + 1e-9).floor() as usize;
    let Some(&passed) = ham.get(allowed) else {
        return scores.iter().copied().fold(f64::INFINITY, f64::min);
    };
    scores
        .iter()
        .copied()
        .filter(|&x| x > passed)
        .fold(f64::INFINITY, f64::min)
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_groups() {
        let s = Scores {
            names: ["a", "b", "c", "d"].map(String::from).to_vec(),
            why: vec![String::new(); 4],
            scores: vec![9.0, 4.0, 1.0, 6.0],
            spam: vec![true, true, false, false],
            groups: vec!["spam".into(), "spam".into(), "ham".into(), "ham".into()],
            bayes: vec![Some(0.99), None, Some(0.2), Some(0.7)],
            ngram: vec![Some(0.6), Some(0.9), Some(0.1), Some(0.3)],
        };
        assert_eq!(s.rates(5.0), (0.5, 0.5));
        assert_eq!(s.rates(10.0), (0.0, 0.0));
        assert_eq!(s.groups(5.0)["ham"], (2, 1));
        let r = s.report(5.0);
        assert!(r.contains("spam recall 50.0 %, ham false positives 50.00 %"), "{r}");
        assert!(r.contains("| ham | 2 | 1 | 50.0 % | 0 | 0.0 % |"), "{r}");
        // No ham may be flagged: the lowest score above the highest ham (6) is 9.
        assert_eq!(s.at_fp(MAX_FP), (9.0, 0.5, 0.0));
        assert!(
            r.contains("(score >= 9.00): spam recall 50.0 %, ham false positives 0.00 %"),
            "{r}"
        );
        // Half the ham may be: above the second-highest ham (1) comes 4.
        assert_eq!(s.at_fp(0.5), (4.0, 1.0, 0.5));
        // The classifier alone: above 0.7 comes 0.99 (no opinion counts as 0.5).
        assert_eq!(s.bayes_at_fp(MAX_FP), Some((0.99, 0.5, 0.0)));
        // The n-gram classifier ranks both spam above both ham.
        assert_eq!(s.ngram_at_fp(MAX_FP), Some((0.6, 1.0, 0.0)));
        assert!(
            r.contains("Classifier (Bayes) alone at ham false positives <= 0.5 % (P >= 0.9900)")
                && r.contains(
                    "N-gram classifier alone at ham false positives <= 0.5 % (P >= 0.6000): spam recall 100.0 %"
                ),
            "{r}"
        );
        assert_eq!(
            s.mistakes(5.0),
            "ham flagged as spam (1):\n     6.00  d  \nspam missed (1):\n     4.00  b  \n"
        );
    }
}
