//! SOQL text to a syntax tree, for exactly the subset of SPEC §1.2:
//!
//! ```text
//! SELECT path {, path} FROM Object [WHERE cond] [ORDER BY path [ASC|DESC]] [LIMIT n]
//! cond    = and {OR and}          (AND binds tighter than OR)
//! and     = atom {AND atom}
//! atom    = ( cond ) | path op literal | path IN ( literal {, literal} )
//! path    = Field | Relationship.Field
//! literal = 'string' | number | datetime | true | false | null
//! ```
//!
//! Keywords are case-insensitive. Anything else (`*`, functions, subqueries, LIKE, NOT,
//! OFFSET, bind variables, `;`) is a syntax error: nothing here is ever passed on as text.
//!
//! The parser is recursive, so the text bounds what it does: at most [`MAX_DEPTH`]
//! levels of parentheses, [`MAX_CONDITIONS`] comparisons, [`MAX_IN_ITEMS`] values in one
//! `IN` list and [`MAX_VALUES`] literal values in all. Past a bound the text is a syntax
//! error (`MALFORMED_QUERY`) before anything is built for it; within them the store's SQL
//! runs on both databases (`crates/store/src/query/sql.rs`).

use refunds_store::query::Op;

/// The longest query text, in characters (Salesforce's limit).
pub const MAX_TEXT_CHARS: usize = 100_000;
/// Parentheses nested deeper than this are refused.
pub const MAX_DEPTH: usize = 100;
/// Comparisons (`f op v` and `f IN (…)`, each one) in a WHERE clause.
pub const MAX_CONDITIONS: usize = 500;
/// Values in one `IN` list.
pub const MAX_IN_ITEMS: usize = 1_000;
/// Literal values in a WHERE clause, over all its comparisons and `IN` lists: what keeps
/// the bound parameters of the SQL (up to four per money value, one per currency
/// exponent) under SQLite's 32,766.
pub const MAX_VALUES: usize = 4_000;

/// Where (byte offset into the query) and why the text is not in the subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub at: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub relationship: Option<Name>,
    pub field: Name,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lit {
    Null,
    Bool(bool),
    Text(String),
    /// The number's text, checked to be `[+-]?digits[.digits]`.
    Number(String),
    /// Milliseconds since the Unix epoch.
    DateTime(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare { path: Path, op: Op, value: Lit },
    In { path: Path, values: Vec<Lit> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soql {
    pub select: Vec<Path>,
    pub object: Name,
    pub filter: Option<Expr>,
    /// The path and whether it is descending.
    pub order: Option<(Path, bool)>,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    DateTime(i64),
    Comma,
    Dot,
    Open,
    Close,
    Cmp(Op),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    at: usize,
    end: usize,
}

/// Words that are never field or object names, so that `SELECT FROM Refund` reads as
/// a missing field list rather than a field called FROM.
const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "ORDER", "BY", "ASC", "DESC", "NULLS", "LIMIT",
    "OFFSET", "IN", "LIKE", "NULL", "TRUE", "FALSE", "GROUP", "HAVING", "WITH", "USING", "FOR",
    "TYPEOF", "INCLUDES", "EXCLUDES",
];

fn error(at: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        at,
        message: message.into(),
    }
}

fn lex(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let b = bytes[i];
        let single = match b {
            b',' => Some(Tok::Comma),
            b'.' => Some(Tok::Dot),
            b'(' => Some(Tok::Open),
            b')' => Some(Tok::Close),
            _ => None,
        };
        let next = bytes.get(i + 1).copied();
        let tok = if b.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if let Some(tok) = single {
            i += 1;
            tok
        } else if b == b'=' {
            i += 1;
            Tok::Cmp(Op::Eq)
        } else if b == b'!' && next == Some(b'=') {
            i += 2;
            Tok::Cmp(Op::Ne)
        } else if b == b'<' || b == b'>' {
            let or_equal = next == Some(b'=');
            i += if or_equal { 2 } else { 1 };
            Tok::Cmp(match (b, or_equal) {
                (b'<', false) => Op::Lt,
                (b'<', true) => Op::Le,
                (_, false) => Op::Gt,
                (_, true) => Op::Ge,
            })
        } else if b == b'\'' {
            let (value, end) = string(text, i)?;
            i = end;
            Tok::Str(value)
        } else if b.is_ascii_alphabetic() || b == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Tok::Word(text[start..i].to_string())
        } else if b.is_ascii_digit()
            || ((b == b'-' || b == b'+') && next.is_some_and(|n| n.is_ascii_digit()))
        {
            // One run covers numbers and datetimes (2026-11-28T16:00:00.000+0000);
            // SOQL has no arithmetic, so a sign inside a run can only be a zone offset.
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || b".:+-".contains(&bytes[i]))
            {
                i += 1;
            }
            literal_run(&text[start..i], start)?
        } else {
            let shown: String = text[start..].chars().take(1).collect();
            return Err(error(start, format!("unexpected token: '{shown}'")));
        };
        tokens.push(Token {
            tok,
            at: start,
            end: i,
        });
    }
    Ok(tokens)
}

/// A quoted string starting at `start`; answers its value and the offset after it.
fn string(text: &str, start: usize) -> Result<(String, usize), SyntaxError> {
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        let at = start + 1 + offset;
        match c {
            '\'' => return Ok((value, at + 1)),
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    break;
                };
                value.push(match escaped {
                    'n' | 'N' => '\n',
                    'r' | 'R' => '\r',
                    't' | 'T' => '\t',
                    'b' | 'B' => '\u{8}',
                    'f' | 'F' => '\u{c}',
                    '\'' | '"' | '\\' => escaped,
                    'u' => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .and_then(char::from_u32)
                            .ok_or_else(|| error(at, "invalid unicode escape in string literal"))?
                    }
                    other => {
                        return Err(error(
                            at,
                            format!("invalid escape sequence in string literal: '\\{other}'"),
                        ))
                    }
                });
            }
            c => value.push(c),
        }
    }
    Err(error(start, "unterminated string literal"))
}

fn literal_run(run: &str, at: usize) -> Result<Tok, SyntaxError> {
    let unsigned = run.strip_prefix(['-', '+']).unwrap_or(run);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && frac.is_none_or(digits) {
        return Ok(Tok::Num(run.to_string()));
    }
    if run.len() > 10 && run.as_bytes().get(10) == Some(&b'T') {
        return datetime(run)
            .map(Tok::DateTime)
            .ok_or_else(|| error(at, format!("invalid date/time literal: '{run}'")));
    }
    Err(error(at, format!("unexpected token: '{run}'")))
}

/// `YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm|±hhmm)`, the SOQL dateTime forms (the last is the
/// one this API renders), as epoch milliseconds.
pub fn datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let mut i = 19;
    let mut millis = 0;
    if at(i, b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&digits) {
            return None;
        }
        millis = num(i + 1, digits)? * 10i64.pow(3 - u32::try_from(digits).ok()?);
        i += 1 + digits;
    }
    let offset_minutes = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest.len() {
                5 if rest[2] == b':' => (num(i + 1, 2)?, num(i + 4, 2)?),
                4 => (num(i + 1, 2)?, num(i + 3, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let days_in_month = *month_days.get(usize::try_from(month - 1).ok()?)?;
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    next: usize,
    /// Open parentheses around the current position.
    depth: usize,
    conditions: usize,
    values: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.next).map(|t| &t.tok)
    }

    fn unexpected(&self) -> SyntaxError {
        match self.tokens.get(self.next) {
            Some(t) => error(
                t.at,
                format!("unexpected token: '{}'", &self.text[t.at..t.end]),
            ),
            None => error(self.text.len(), "unexpected token: <EOF>"),
        }
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SyntaxError> {
        if self.at_keyword(keyword) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let found = self.peek() == Some(tok);
        if found {
            self.next += 1;
        }
        found
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), SyntaxError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn name(&mut self) -> Result<Name, SyntaxError> {
        match self.tokens.get(self.next) {
            Some(Token {
                tok: Tok::Word(w),
                at,
                ..
            }) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w)) => {
                let name = Name {
                    text: w.clone(),
                    at: *at,
                };
                self.next += 1;
                Ok(name)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn path(&mut self) -> Result<Path, SyntaxError> {
        let first = self.name()?;
        if !self.eat(&Tok::Dot) {
            return Ok(Path {
                relationship: None,
                field: first,
            });
        }
        let field = self.name()?;
        if self.peek() == Some(&Tok::Dot) {
            return Err(error(
                first.at,
                "only one-level parent paths (Relationship.Field) are supported",
            ));
        }
        Ok(Path {
            relationship: Some(first),
            field,
        })
    }

    fn literal(&mut self) -> Result<Lit, SyntaxError> {
        let lit = match self.peek() {
            Some(Tok::Str(s)) => Lit::Text(s.clone()),
            Some(Tok::Num(n)) => Lit::Number(n.clone()),
            Some(Tok::DateTime(ms)) => Lit::DateTime(*ms),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Lit::Bool(false),
            _ => return Err(self.unexpected()),
        };
        self.next += 1;
        Ok(lit)
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.and()?];
        while self.at_keyword("OR") {
            self.next += 1;
            parts.push(self.and()?);
        }
        Ok(flatten(parts, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.atom()?];
        while self.at_keyword("AND") {
            self.next += 1;
            parts.push(self.atom()?);
        }
        Ok(flatten(parts, Expr::And))
    }

    /// Where the current token starts (the end of the text after the last).
    fn here(&self) -> usize {
        self.tokens.get(self.next).map_or(self.text.len(), |t| t.at)
    }

    /// Counts one literal value against [`MAX_VALUES`].
    fn value(&mut self) -> Result<Lit, SyntaxError> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(error(
                self.here(),
                format!("too many values: a query may have at most {MAX_VALUES}"),
            ));
        }
        self.literal()
    }

    fn atom(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek() == Some(&Tok::Open) {
            if self.depth >= MAX_DEPTH {
                return Err(error(
                    self.here(),
                    format!(
                        "conditions nested too deeply: at most {MAX_DEPTH} levels of parentheses"
                    ),
                ));
            }
            self.next += 1;
            self.depth += 1;
            let inner = self.or()?;
            self.expect(&Tok::Close)?;
            self.depth -= 1;
            return Ok(inner);
        }
        let at = self.here();
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(error(
                at,
                format!("too many conditions: a WHERE clause may have at most {MAX_CONDITIONS}"),
            ));
        }
        let path = self.path()?;
        if let Some(Tok::Cmp(op)) = self.peek() {
            let op = *op;
            self.next += 1;
            let value = self.value()?;
            return Ok(Expr::Compare { path, op, value });
        }
        self.keyword("IN")?;
        self.expect(&Tok::Open)?;
        let mut values = vec![self.value()?];
        while self.eat(&Tok::Comma) {
            if values.len() >= MAX_IN_ITEMS {
                return Err(error(
                    self.here(),
                    format!("too many values in an IN list: at most {MAX_IN_ITEMS}"),
                ));
            }
            values.push(self.value()?);
        }
        self.expect(&Tok::Close)?;
        Ok(Expr::In { path, values })
    }

    fn limit(&mut self) -> Result<u64, SyntaxError> {
        let Some(token) = self.tokens.get(self.next) else {
            return Err(self.unexpected());
        };
        let at = token.at;
        let value = match &token.tok {
            Tok::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) => n.parse::<u64>().ok(),
            Tok::Num(_) => None,
            _ => return Err(self.unexpected()),
        };
        self.next += 1;
        value.ok_or_else(|| error(at, "LIMIT must be a non-negative integer"))
    }
}

fn flatten(mut parts: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        join(parts)
    }
}

pub fn parse(text: &str) -> Result<Soql, SyntaxError> {
    // Counted before anything else is done with the text.
    if text.chars().nth(MAX_TEXT_CHARS).is_some() {
        return Err(error(
            0,
            format!("the query is too long: at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    let mut p = Parser {
        text,
        tokens: lex(text)?,
        next: 0,
        depth: 0,
        conditions: 0,
        values: 0,
    };
    p.keyword("SELECT")?;
    let mut select = vec![p.path()?];
    while p.eat(&Tok::Comma) {
        select.push(p.path()?);
    }
    p.keyword("FROM")?;
    let object = p.name()?;
    let filter = if p.at_keyword("WHERE") {
        p.next += 1;
        Some(p.or()?)
    } else {
        None
    };
    let order = if p.at_keyword("ORDER") {
        p.next += 1;
        p.keyword("BY")?;
        let path = p.path()?;
        let descending = p.at_keyword("DESC");
        if descending || p.at_keyword("ASC") {
            p.next += 1;
        }
        Some((path, descending))
    } else {
        None
    };
    let limit = if p.at_keyword("LIMIT") {
        p.next += 1;
        Some(p.limit()?)
    } else {
        None
    };
    if p.peek().is_some() {
        return Err(p.unexpected());
    }
    Ok(Soql {
        select,
        object,
        filter,
        order,
        limit,
    })
}
