//! The allocation rule (SPEC §3.1): how an amount to refund is split across an order's
//! payment summaries and, within each summary, across its payments.
//!
//! Everything here is pure integer arithmetic on minor units of one currency. Inputs that
//! are zero or negative are treated as 0 and never produce a leg, so callers can pass
//! balances straight from storage without clamping them first.

use std::cmp::Reverse;
use std::str::FromStr;

/// Which summary (or payment) is refunded first when several could be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AllocationRule {
    /// Salesforce's current rule: exact match, else the smallest covering one, else
    /// descending order (fewest refunds).
    #[default]
    SmallestCovering,
    /// The older Salesforce Flow rule, for compatibility: largest available first.
    LargestFirst,
}

impl AllocationRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationRule::SmallestCovering => "smallest-covering",
            AllocationRule::LargestFirst => "largest-first",
        }
    }
}

impl FromStr for AllocationRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "smallest-covering" => Ok(AllocationRule::SmallestCovering),
            "largest-first" => Ok(AllocationRule::LargestFirst),
            other => Err(format!(
                "unknown allocation rule {other:?} (expected \"smallest-covering\" or \"largest-first\")"
            )),
        }
    }
}

/// One order payment summary as the allocator sees it, in tie-break order (oldest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummarySlot {
    /// The summary's AvailableToRefundAmount.
    pub available: i64,
    /// Each payment's refundable balance, oldest first.
    pub payments: Vec<i64>,
}

/// One entry of the request's `sequences`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceItem {
    /// Index into [`AllocationRequest::summaries`]; an index out of range takes nothing.
    pub summary: usize,
    /// None = "as much as possible" (the API's 0).
    pub amount: Option<i64>,
}

#[derive(Clone, Copy, Debug)]
pub struct AllocationRequest<'a> {
    pub credit_memo_amount: i64,
    pub excess_amount: i64,
    pub sequences: &'a [SequenceItem],
    pub allow_partial: bool,
    pub summaries: &'a [SummarySlot],
    pub rule: AllocationRule,
}

/// One refund to make: `amount` from payment `payment` of summary `summary`, of which
/// `from_credit_memo` is the credit memo's part and the rest is excess funds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub summary: usize,
    pub payment: usize,
    pub amount: i64,
    pub from_credit_memo: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Allocation {
    /// At most one leg per (summary, payment), in order of first allocation.
    pub legs: Vec<Leg>,
    pub unallocated_credit_memo: i64,
    pub unallocated_excess: i64,
}

/// Splits the request's credit memo and excess amounts into legs (SPEC §3.1).
pub fn allocate(req: &AllocationRequest<'_>) -> Allocation {
    let mut allocator = Allocator::new(req);
    allocator.run_sequences(req.sequences);
    // Partial allocation only means something when the caller named summaries; without
    // sequences it would refund nothing, which no caller intends.
    let stop_after_sequences = req.allow_partial && !req.sequences.is_empty();
    if allocator.remaining_total() > 0 && !stop_after_sequences {
        allocator.run_default_rule();
    }
    allocator.finish()
}

/// The a/b/c rule over a list of available amounts (index order = tie-break order).
/// Returns (index, amount) picks.
///
/// Never returns more than `amount` in total nor more than an index's available amount,
/// and always returns `min(amount, sum of positive available)` in total.
pub fn pick(amount: i64, available: &[i64], rule: AllocationRule) -> Vec<(usize, i64)> {
    if amount <= 0 {
        return Vec::new();
    }
    match rule {
        AllocationRule::SmallestCovering => pick_smallest_covering(amount, available),
        AllocationRule::LargestFirst => pick_largest_first(amount, available),
    }
}

fn pick_smallest_covering(amount: i64, available: &[i64]) -> Vec<(usize, i64)> {
    // `amount` > 0 here, so an exact or covering match is never a zero or negative entry.
    if let Some(i) = available.iter().position(|&a| a == amount) {
        return vec![(i, amount)];
    }
    // min_by_key keeps the first of equal minima, which is the earliest-index tie-break.
    let covering = available
        .iter()
        .enumerate()
        .filter(|&(_, &a)| a > amount)
        .min_by_key(|&(_, &a)| a);
    if let Some((i, _)) = covering {
        return vec![(i, amount)];
    }
    let mut order: Vec<usize> = (0..available.len()).filter(|&i| available[i] > 0).collect();
    order.sort_by_key(|&i| (Reverse(available[i]), i));
    let mut remaining = amount;
    let mut picks = Vec::new();
    for i in order {
        if remaining == 0 {
            break;
        }
        let take = available[i].min(remaining);
        remaining -= take;
        picks.push((i, take));
    }
    picks
}

fn pick_largest_first(amount: i64, available: &[i64]) -> Vec<(usize, i64)> {
    let mut left: Vec<i64> = available.iter().map(|&a| a.max(0)).collect();
    let mut remaining = amount;
    let mut picks = Vec::new();
    // Each round either empties an index or finishes, so this runs at most len + 1 times.
    while remaining > 0 {
        let choice = match left.iter().position(|&a| a == remaining) {
            Some(i) => Some((i, remaining)),
            None => left
                .iter()
                .enumerate()
                .filter(|&(_, &a)| a > 0)
                // Largest first; Reverse(index) makes the earliest index win among equals.
                .max_by_key(|&(i, &a)| (a, Reverse(i)))
                .map(|(i, &a)| (i, a.min(remaining))),
        };
        let Some((i, take)) = choice else { break };
        left[i] -= take;
        remaining -= take;
        picks.push((i, take));
    }
    picks
}

/// Where a leg's money comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The credit memo's remaining part first, then excess funds (sequences; and the
    /// default rule's credit-memo pass, whose amounts never exceed the credit memo part).
    CreditMemoFirst,
    /// Excess funds only (the default rule's second pass).
    Excess,
}

/// Running balances while legs are made. Invariant: every `summary_left[s]` is at most the
/// sum of `payment_left[s]`, so an amount given to a summary always fits its payments.
struct Allocator {
    rule: AllocationRule,
    summary_left: Vec<i64>,
    payment_left: Vec<Vec<i64>>,
    credit_memo_left: i64,
    excess_left: i64,
    legs: Vec<Leg>,
}

impl Allocator {
    fn new(req: &AllocationRequest<'_>) -> Allocator {
        let payment_left: Vec<Vec<i64>> = req
            .summaries
            .iter()
            .map(|s| s.payments.iter().map(|&p| p.max(0)).collect())
            .collect();
        let summary_left = req
            .summaries
            .iter()
            .zip(&payment_left)
            .map(|(s, payments)| {
                // Saturating is exact here: a saturated sum is already above any i64
                // `available`, so the min is unchanged.
                let refundable = payments.iter().fold(0i64, |acc, &p| acc.saturating_add(p));
                s.available.max(0).min(refundable)
            })
            .collect();
        Allocator {
            rule: req.rule,
            summary_left,
            payment_left,
            credit_memo_left: req.credit_memo_amount.max(0),
            excess_left: req.excess_amount.max(0),
            legs: Vec::new(),
        }
    }

    /// Saturating is exact for its uses: the total only ever caps amounts that are also
    /// capped by an i64 availability, which a saturated total exceeds anyway.
    fn remaining_total(&self) -> i64 {
        self.credit_memo_left.saturating_add(self.excess_left)
    }

    fn run_sequences(&mut self, sequences: &[SequenceItem]) {
        for item in sequences {
            let total = self.remaining_total();
            if total == 0 {
                break;
            }
            let left = self.summary_left.get(item.summary).copied().unwrap_or(0);
            let wanted = item.amount.map_or(total, |a| a.max(0));
            let amount = wanted.min(left).min(total);
            if amount > 0 {
                self.give(item.summary, amount, Source::CreditMemoFirst);
            }
        }
    }

    /// The credit memo part and the excess part are placed by separate passes, as
    /// Salesforce does, so each part independently gets the exact/covering preference.
    fn run_default_rule(&mut self) {
        for (summary, amount) in pick(self.credit_memo_left, &self.summary_left, self.rule) {
            self.give(summary, amount, Source::CreditMemoFirst);
        }
        for (summary, amount) in pick(self.excess_left, &self.summary_left, self.rule) {
            self.give(summary, amount, Source::Excess);
        }
    }

    /// Gives `amount` (at most the summary's remaining availability and the matching
    /// remaining part of the request) to `summary`, split over its payments by the rule.
    fn give(&mut self, summary: usize, amount: i64, source: Source) {
        let Some(payments) = self.payment_left.get_mut(summary) else {
            return;
        };
        let picks = pick(amount, payments, self.rule);
        debug_assert_eq!(
            picks.iter().map(|&(_, a)| a).sum::<i64>(),
            amount,
            "a summary's availability must fit its payments"
        );
        for (payment, part) in picks {
            let from_credit_memo = match source {
                Source::CreditMemoFirst => part.min(self.credit_memo_left),
                Source::Excess => 0,
            };
            // pick never exceeds a payment's balance, and callers cap `amount` by the
            // summary's availability and by what is left to refund, so nothing below
            // goes negative.
            payments[payment] -= part;
            self.summary_left[summary] -= part;
            self.credit_memo_left -= from_credit_memo;
            self.excess_left -= part - from_credit_memo;
            debug_assert!(self.summary_left[summary] >= 0 && self.excess_left >= 0);
            self.legs.push(Leg {
                summary,
                payment,
                amount: part,
                from_credit_memo,
            });
        }
    }

    /// One leg per (summary, payment): each leg becomes one Refund and one provider call,
    /// so two refunds against the same payment in one operation would be needless calls.
    fn finish(self) -> Allocation {
        let mut legs: Vec<Leg> = Vec::with_capacity(self.legs.len());
        for leg in self.legs {
            match legs
                .iter_mut()
                .find(|m| m.summary == leg.summary && m.payment == leg.payment)
            {
                // Sums stay within the payment's i64 refundable balance.
                Some(merged) => {
                    merged.amount += leg.amount;
                    merged.from_credit_memo += leg.from_credit_memo;
                }
                None => legs.push(leg),
            }
        }
        Allocation {
            legs,
            unallocated_credit_memo: self.credit_memo_left,
            unallocated_excess: self.excess_left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use AllocationRule::{LargestFirst, SmallestCovering};

    #[test]
    fn rule_names() {
        for rule in [SmallestCovering, LargestFirst] {
            assert_eq!(rule.as_str().parse::<AllocationRule>(), Ok(rule));
        }
        assert_eq!(AllocationRule::default(), SmallestCovering);
        for bad in ["", "largest_first", "Largest-First", "smallest"] {
            assert!(bad.parse::<AllocationRule>().is_err(), "{bad:?}");
        }
    }

    type PickCase = (
        &'static str,
        i64,
        &'static [i64],
        AllocationRule,
        &'static [(usize, i64)],
    );

    #[rustfmt::skip]
    const PICK_CASES: &[PickCase] = &[
        ("exact match beats a covering one", 50, &[55, 100, 50], SmallestCovering, &[(2, 50)]),
        ("first exact match wins", 30, &[30, 30], SmallestCovering, &[(0, 30)]),
        ("smallest covering beats larger", 30, &[100, 40, 35], SmallestCovering, &[(2, 30)]),
        ("earliest covering among equals", 30, &[40, 40], SmallestCovering, &[(0, 30)]),
        ("descending split when none covers", 100, &[30, 60, 20, 50], SmallestCovering, &[(1, 60), (3, 40)]),
        ("descending split, earliest among equals", 100, &[50, 30, 50], SmallestCovering, &[(0, 50), (2, 50)]),
        ("descending split: largest first, not an exact-sum pair", 70, &[50, 30, 20], SmallestCovering, &[(0, 50), (1, 20)]),
        ("short: takes everything", 100, &[30, 20], SmallestCovering, &[(0, 30), (1, 20)]),
        ("zero and negative never picked", 10, &[0, -5, 3], SmallestCovering, &[(2, 3)]),
        ("zero amount", 0, &[10], SmallestCovering, &[]),
        ("negative amount", -5, &[10], SmallestCovering, &[]),
        ("nothing available", 10, &[], SmallestCovering, &[]),
        ("largest-first takes the largest", 30, &[100, 40], LargestFirst, &[(0, 30)]),
        ("largest-first exact match first", 40, &[100, 40], LargestFirst, &[(1, 40)]),
        ("largest-first exact match for the rest", 70, &[50, 30, 20], LargestFirst, &[(0, 50), (2, 20)]),
        ("largest-first earliest among equals", 30, &[40, 40], LargestFirst, &[(0, 30)]),
        ("largest-first short", 100, &[30, -1, 20], LargestFirst, &[(0, 30), (2, 20)]),
        ("largest-first zero amount", 0, &[10], LargestFirst, &[]),
    ];

    #[test]
    fn pick_cases() {
        for (name, amount, available, rule, expected) in PICK_CASES {
            assert_eq!(pick(*amount, available, *rule), *expected, "{name}");
        }
    }

    #[test]
    fn the_two_rules_differ() {
        assert_eq!(pick(30, &[100, 40], SmallestCovering), [(1, 30)]);
        assert_eq!(pick(30, &[100, 40], LargestFirst), [(0, 30)]);
    }

    fn slot(available: i64, payments: &[i64]) -> SummarySlot {
        SummarySlot {
            available,
            payments: payments.to_vec(),
        }
    }

    fn seq(summary: usize, amount: Option<i64>) -> SequenceItem {
        SequenceItem { summary, amount }
    }

    fn leg(summary: usize, payment: usize, amount: i64, from_credit_memo: i64) -> Leg {
        Leg {
            summary,
            payment,
            amount,
            from_credit_memo,
        }
    }

    struct Case {
        name: &'static str,
        cm: i64,
        excess: i64,
        sequences: Vec<SequenceItem>,
        allow_partial: bool,
        summaries: Vec<SummarySlot>,
        rule: AllocationRule,
        legs: Vec<Leg>,
        unallocated: (i64, i64),
    }

    fn case(name: &'static str, cm: i64, excess: i64, summaries: Vec<SummarySlot>) -> Case {
        Case {
            name,
            cm,
            excess,
            sequences: Vec::new(),
            allow_partial: false,
            summaries,
            rule: SmallestCovering,
            legs: Vec::new(),
            unallocated: (0, 0),
        }
    }

    impl Case {
        fn seqs(mut self, sequences: Vec<SequenceItem>, allow_partial: bool) -> Case {
            self.sequences = sequences;
            self.allow_partial = allow_partial;
            self
        }
        fn rule(mut self, rule: AllocationRule) -> Case {
            self.rule = rule;
            self
        }
        fn expect(mut self, legs: Vec<Leg>, unallocated: (i64, i64)) -> Case {
            self.legs = legs;
            self.unallocated = unallocated;
            self
        }
    }

    #[rustfmt::skip]
    fn allocate_cases() -> Vec<Case> {
        vec![
            case("exact summary over a covering one", 50, 0, vec![slot(55, &[55]), slot(100, &[100]), slot(50, &[50])])
                .expect(vec![leg(2, 0, 50, 50)], (0, 0)),
            case("smallest covering summary", 30, 0, vec![slot(100, &[100]), slot(40, &[40]), slot(35, &[35])])
                .expect(vec![leg(2, 0, 30, 30)], (0, 0)),
            case("descending split, fewest summaries", 100, 0, vec![slot(30, &[30]), slot(60, &[60]), slot(20, &[20]), slot(50, &[50])])
                .expect(vec![leg(1, 0, 60, 60), leg(3, 0, 40, 40)], (0, 0)),
            case("tie goes to the oldest summary", 30, 0, vec![slot(40, &[40]), slot(40, &[40])])
                .expect(vec![leg(0, 0, 30, 30)], (0, 0)),
            case("default rule", 30, 0, vec![slot(100, &[100]), slot(40, &[40])])
                .expect(vec![leg(1, 0, 30, 30)], (0, 0)),
            case("largest-first rule", 30, 0, vec![slot(100, &[100]), slot(40, &[40])]).rule(LargestFirst)
                .expect(vec![leg(0, 0, 30, 30)], (0, 0)),
            case("sequences in order, capped, None = all, rest by default", 200, 0, vec![slot(50, &[50]), slot(100, &[100]), slot(80, &[80])])
                .seqs(vec![seq(1, Some(30)), seq(0, Some(80)), seq(2, None)], false)
                .expect(vec![leg(1, 0, 70, 70), leg(0, 0, 50, 50), leg(2, 0, 80, 80)], (0, 0)),
            case("None takes as much as possible, overriding the default rule", 60, 0, vec![slot(100, &[100]), slot(60, &[60])])
                .seqs(vec![seq(0, None)], false)
                .expect(vec![leg(0, 0, 60, 60)], (0, 0)),
            case("allow partial leaves the rest on the credit memo", 100, 0, vec![slot(50, &[50]), slot(100, &[100])])
                .seqs(vec![seq(0, Some(30))], true)
                .expect(vec![leg(0, 0, 30, 30)], (70, 0)),
            case("allow partial leaves excess unallocated too", 10, 20, vec![slot(100, &[100])])
                .seqs(vec![seq(0, Some(15))], true)
                .expect(vec![leg(0, 0, 15, 10)], (0, 15)),
            case("without allow partial the rest falls to the default rule", 100, 0, vec![slot(50, &[50]), slot(100, &[100])])
                .seqs(vec![seq(0, Some(30))], false)
                .expect(vec![leg(0, 0, 30, 30), leg(1, 0, 70, 70)], (0, 0)),
            case("allow partial is ignored without sequences", 40, 0, vec![slot(40, &[40])])
                .seqs(vec![], true)
                .expect(vec![leg(0, 0, 40, 40)], (0, 0)),
            case("zero or negative sequence amounts take nothing", 10, 0, vec![slot(10, &[10])])
                .seqs(vec![seq(0, Some(0)), seq(0, Some(-5))], true)
                .expect(vec![], (10, 0)),
            case("an unknown summary index takes nothing", 10, 0, vec![slot(10, &[10])])
                .seqs(vec![seq(9, None)], false)
                .expect(vec![leg(0, 0, 10, 10)], (0, 0)),
            case("credit memo and excess on one summary merge into one leg", 30, 20, vec![slot(100, &[100])])
                .expect(vec![leg(0, 0, 50, 30)], (0, 0)),
            case("credit memo and excess placed separately", 30, 40, vec![slot(30, &[30]), slot(40, &[40])])
                .expect(vec![leg(0, 0, 30, 30), leg(1, 0, 40, 0)], (0, 0)),
            case("a sequence leg uses the credit memo first", 30, 40, vec![slot(100, &[100])])
                .seqs(vec![seq(0, Some(50))], false)
                .expect(vec![leg(0, 0, 70, 30)], (0, 0)),
            case("payments: smallest covering", 30, 0, vec![slot(200, &[20, 50, 40])])
                .expect(vec![leg(0, 2, 30, 30)], (0, 0)),
            case("payments: largest first", 30, 0, vec![slot(200, &[20, 50, 40])]).rule(LargestFirst)
                .expect(vec![leg(0, 1, 30, 30)], (0, 0)),
            case("payments: descending split", 90, 0, vec![slot(200, &[20, 50, 40])])
                .expect(vec![leg(0, 1, 50, 50), leg(0, 2, 40, 40)], (0, 0)),
            case("payments: a split sequence leg keeps credit memo first", 30, 60, vec![slot(200, &[20, 50, 40])])
                .seqs(vec![seq(0, Some(90))], false)
                .expect(vec![leg(0, 1, 50, 30), leg(0, 2, 40, 0)], (0, 0)),
            case("availability short of the total leaves the rest", 100, 50, vec![slot(120, &[120])])
                .expect(vec![leg(0, 0, 120, 100)], (0, 30)),
            case("credit memo alone exceeding availability", 500, 20, vec![slot(300, &[300])])
                .expect(vec![leg(0, 0, 300, 300)], (200, 20)),
            case("availability is capped by the payments' balances", 100, 0, vec![slot(100, &[30])])
                .expect(vec![leg(0, 0, 30, 30)], (70, 0)),
            case("and the payments by the summary's availability", 50, 0, vec![slot(20, &[30, 30])])
                .expect(vec![leg(0, 0, 20, 20)], (30, 0)),
            case("negative balances count as zero", 10, 0, vec![slot(-5, &[10]), slot(10, &[-3, 10])])
                .expect(vec![leg(1, 1, 10, 10)], (0, 0)),
            case("negative amounts count as zero", -10, -1, vec![slot(10, &[10])])
                .expect(vec![], (0, 0)),
            case("no summaries", 10, 5, vec![]).expect(vec![], (10, 5)),
        ]
    }

    #[test]
    fn allocate_table() {
        for c in allocate_cases() {
            let req = AllocationRequest {
                credit_memo_amount: c.cm,
                excess_amount: c.excess,
                sequences: &c.sequences,
                allow_partial: c.allow_partial,
                summaries: &c.summaries,
                rule: c.rule,
            };
            let expected = Allocation {
                legs: c.legs,
                unallocated_credit_memo: c.unallocated.0,
                unallocated_excess: c.unallocated.1,
            };
            assert_eq!(allocate(&req), expected, "{}", c.name);
        }
    }

    fn rules() -> impl Strategy<Value = AllocationRule> {
        prop_oneof![Just(SmallestCovering), Just(LargestFirst)]
    }

    fn summaries(amounts: std::ops::Range<i64>) -> impl Strategy<Value = Vec<SummarySlot>> {
        let slot = (amounts.clone(), prop::collection::vec(amounts, 0..4)).prop_map(
            |(available, payments)| SummarySlot {
                available,
                payments,
            },
        );
        prop::collection::vec(slot, 0..6)
    }

    fn sequences() -> impl Strategy<Value = Vec<SequenceItem>> {
        // Index 6 is out of range for every generated request.
        let item = (0usize..7, prop::option::of(0i64..10_000))
            .prop_map(|(summary, amount)| SequenceItem { summary, amount });
        prop::collection::vec(item, 0..5)
    }

    fn effective(s: &SummarySlot) -> i128 {
        let refundable: i128 = s.payments.iter().map(|&p| i128::from(p.max(0))).sum();
        i128::from(s.available.max(0)).min(refundable)
    }

    fn check_invariants(
        req: &AllocationRequest<'_>,
        out: &Allocation,
    ) -> Result<(), TestCaseError> {
        let cm = i128::from(req.credit_memo_amount.max(0));
        let excess = i128::from(req.excess_amount.max(0));
        let placed: i128 = out.legs.iter().map(|l| i128::from(l.amount)).sum();
        let from_cm: i128 = out
            .legs
            .iter()
            .map(|l| i128::from(l.from_credit_memo))
            .sum();
        let un_cm = i128::from(out.unallocated_credit_memo);
        let un_ex = i128::from(out.unallocated_excess);
        prop_assert!(un_cm >= 0 && un_ex >= 0);
        prop_assert_eq!(placed + un_cm + un_ex, cm + excess);
        prop_assert_eq!(from_cm + un_cm, cm);
        let mut pairs = HashSet::new();
        for leg in &out.legs {
            prop_assert!(leg.amount > 0, "{:?}", leg);
            prop_assert!(0 <= leg.from_credit_memo && leg.from_credit_memo <= leg.amount);
            prop_assert!(
                pairs.insert((leg.summary, leg.payment)),
                "duplicate {:?}",
                leg
            );
            let refundable = req.summaries[leg.summary].payments[leg.payment];
            prop_assert!(leg.amount <= refundable, "{:?} over {}", leg, refundable);
        }
        let mut available_total: i128 = 0;
        for (i, s) in req.summaries.iter().enumerate() {
            let to_summary: i128 = out
                .legs
                .iter()
                .filter(|l| l.summary == i)
                .map(|l| i128::from(l.amount))
                .sum();
            prop_assert!(to_summary <= effective(s), "summary {} over", i);
            available_total += effective(s);
        }
        let defaults_apply = !req.allow_partial || req.sequences.is_empty();
        if defaults_apply && cm + excess <= available_total {
            prop_assert_eq!((un_cm, un_ex), (0, 0));
        }
        if defaults_apply {
            // The default rule places as much as there is room for.
            prop_assert_eq!(placed, (cm + excess).min(available_total));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn allocation_invariants(
            summaries in summaries(0..10_000),
            sequences in sequences(),
            cm in 0i64..30_000,
            excess in 0i64..30_000,
            allow_partial in any::<bool>(),
            rule in rules(),
        ) {
            let req = AllocationRequest {
                credit_memo_amount: cm,
                excess_amount: excess,
                sequences: &sequences,
                allow_partial,
                summaries: &summaries,
                rule,
            };
            let out = allocate(&req);
            check_invariants(&req, &out)?;
            prop_assert_eq!(allocate(&req), out, "deterministic");
        }

        #[test]
        fn allocation_survives_extreme_values(
            summaries in summaries(i64::MIN..i64::MAX),
            sequences in sequences(),
            cm in any::<i64>(),
            excess in any::<i64>(),
            allow_partial in any::<bool>(),
            rule in rules(),
        ) {
            let req = AllocationRequest {
                credit_memo_amount: cm,
                excess_amount: excess,
                sequences: &sequences,
                allow_partial,
                summaries: &summaries,
                rule,
            };
            check_invariants(&req, &allocate(&req))?;
        }

        #[test]
        fn pick_invariants(
            amount in -10i64..20_000,
            available in prop::collection::vec(-100i64..10_000, 0..8),
            rule in rules(),
        ) {
            check_pick(amount, &available, rule)?;
        }

        #[test]
        fn pick_survives_extreme_values(
            amount in any::<i64>(),
            available in prop::collection::vec(any::<i64>(), 0..8),
            rule in rules(),
        ) {
            check_pick(amount, &available, rule)?;
        }
    }

    fn check_pick(
        amount: i64,
        available: &[i64],
        rule: AllocationRule,
    ) -> Result<(), TestCaseError> {
        let picks = pick(amount, available, rule);
        let total: i128 = picks.iter().map(|&(_, a)| i128::from(a)).sum();
        let positive: i128 = available.iter().map(|&a| i128::from(a.max(0))).sum();
        prop_assert!(total <= i128::from(amount.max(0)));
        prop_assert_eq!(total, i128::from(amount.max(0)).min(positive));
        let mut seen = HashSet::new();
        for &(i, a) in &picks {
            prop_assert!(a > 0 && a <= available[i], "{} from {}", a, available[i]);
            prop_assert!(seen.insert(i), "index {} picked twice", i);
        }
        if rule == SmallestCovering && amount > 0 && available.iter().any(|&a| a >= amount) {
            // Whenever one entry can cover the amount, exactly one refund is made.
            prop_assert_eq!(picks.len(), 1);
        }
        Ok(())
    }
}
