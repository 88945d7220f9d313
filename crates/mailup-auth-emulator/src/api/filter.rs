//! The `filterby` / `orderby` language the emulator understands: MailUp's documented forms
//! (`Email=='x'`, `Name.Contains('x')`, `Fields['City']=='x'`, comparisons joined with `&&` and
//! `||`, `idList desc`), evaluated on each item's JSON. Anything else is an error whose text
//! [`super::paging`] puts in a 400.

use std::cmp::Ordering;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    And,
    Or,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match c {
            _ if c.is_whitespace() => i += 1,
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .ok_or("a string literal is not closed")?;
                tokens.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '.' => {
                tokens.push(Token::Dot);
                i += 1;
            }
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            '[' => {
                tokens.push(Token::LBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::RBracket);
                i += 1;
            }
            _ if two == "&&" => {
                tokens.push(Token::And);
                i += 2;
            }
            _ if two == "||" => {
                tokens.push(Token::Or);
                i += 2;
            }
            _ if ["==", "!=", "<=", ">="].contains(&two.as_str()) => {
                let op = ["==", "!=", "<=", ">="]
                    .into_iter()
                    .find(|op| *op == two)
                    .unwrap_or("==");
                tokens.push(Token::Op(op));
                i += 2;
            }
            '<' => {
                tokens.push(Token::Op("<"));
                i += 1;
            }
            '>' => {
                tokens.push(Token::Op(">"));
                i += 1;
            }
            _ if c.is_ascii_digit() || c == '-' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|x| !(x.is_ascii_digit() || *x == '.'))
                    .map_or(chars.len(), |p| i + 1 + p);
                let literal: String = chars[i..end].iter().collect();
                let value = literal
                    .parse()
                    .map_err(|_| format!("{literal:?} is not a number"))?;
                tokens.push(Token::Num(value));
                i = end;
            }
            _ if c.is_alphabetic() || c == '_' => {
                let end = chars[i..]
                    .iter()
                    .position(|x| !(x.is_alphanumeric() || *x == '_'))
                    .map_or(chars.len(), |p| i + p);
                let word: String = chars[i..end].iter().collect();
                tokens.push(match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    _ => Token::Ident(word),
                });
                i = end;
            }
            _ => return Err(format!("unexpected character {c:?}")),
        }
    }
    Ok(tokens)
}

/// A property of an item: a top-level key, or `Fields['Description']` (a recipient's personal
/// data field, as MailUp's square-bracket accessor).
#[derive(Debug, Clone)]
pub(crate) enum Path {
    Key(String),
    Field(String),
}

impl Path {
    pub(crate) fn lookup<'a>(&self, item: &'a Value) -> Result<&'a Value, String> {
        let object = item.as_object().ok_or("the items have no properties")?;
        match self {
            Path::Key(name) => object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .ok_or_else(|| format!("property {name:?} is not defined on this resource")),
            Path::Field(description) => object
                .get("Fields")
                .and_then(Value::as_array)
                .ok_or("Fields is not defined on this resource")?
                .iter()
                .find(|f| f["Description"].as_str() == Some(description.as_str()))
                .map(|f| &f["Value"])
                .ok_or_else(|| format!("there is no personal data field {description:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
pub(crate) enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Compare(Path, &'static str, Literal),
    Call(Path, Method, String),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Parentheses open right now: bounded, so a hostile filter cannot exhaust the stack.
    depth: usize,
}

/// The deepest nesting of parentheses a filter may use.
const MAX_DEPTH: usize = 32;

pub(crate) fn parse_filter(text: &str) -> Result<Expr, String> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        at: 0,
        depth: 0,
    };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(format!("unexpected {token:?}")),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn take(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect(&mut self, expected: &Token) -> Result<(), String> {
        match self.take() {
            Some(token) if &token == expected => Ok(()),
            other => Err(format!("expected {expected:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.term()?];
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            terms.push(self.term()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn term(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::LParen) {
            if self.depth >= MAX_DEPTH {
                return Err(format!(
                    "parentheses nested deeper than {MAX_DEPTH} levels are not supported"
                ));
            }
            self.at += 1;
            self.depth += 1;
            let inner = self.or()?;
            self.depth -= 1;
            self.expect(&Token::RParen)?;
            return Ok(inner);
        }
        let path = match self.take() {
            Some(Token::Ident(name))
                if name == "Fields" && self.peek() == Some(&Token::LBracket) =>
            {
                self.at += 1;
                let Some(Token::Str(description)) = self.take() else {
                    return Err("Fields[...] takes a quoted field description".into());
                };
                self.expect(&Token::RBracket)?;
                Path::Field(description)
            }
            Some(Token::Ident(name)) => Path::Key(name),
            other => return Err(format!("expected a property name, found {other:?}")),
        };
        match self.take() {
            Some(Token::Op(op)) => {
                let literal = match self.take() {
                    Some(Token::Str(s)) => Literal::Str(s),
                    Some(Token::Num(n)) => Literal::Num(n),
                    Some(Token::Ident(word)) if word.eq_ignore_ascii_case("true") => {
                        Literal::Bool(true)
                    }
                    Some(Token::Ident(word)) if word.eq_ignore_ascii_case("false") => {
                        Literal::Bool(false)
                    }
                    Some(Token::Ident(word)) if word.eq_ignore_ascii_case("null") => Literal::Null,
                    other => return Err(format!("expected a value after {op}, found {other:?}")),
                };
                Ok(Expr::Compare(path, op, literal))
            }
            Some(Token::Dot) => {
                let method = match self.take() {
                    Some(Token::Ident(m)) if m == "Contains" => Method::Contains,
                    Some(Token::Ident(m)) if m == "StartsWith" => Method::StartsWith,
                    Some(Token::Ident(m)) if m == "EndsWith" => Method::EndsWith,
                    other => return Err(format!("unsupported method {other:?}")),
                };
                self.expect(&Token::LParen)?;
                let Some(Token::Str(argument)) = self.take() else {
                    return Err("the method takes one quoted string".into());
                };
                self.expect(&Token::RParen)?;
                Ok(Expr::Call(path, method, argument))
            }
            other => Err(format!("expected an operator or a method, found {other:?}")),
        }
    }
}

impl Expr {
    pub(crate) fn eval(&self, item: &Value) -> Result<bool, String> {
        match self {
            Expr::Or(terms) => {
                for term in terms {
                    if term.eval(item)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Expr::And(terms) => {
                for term in terms {
                    if !term.eval(item)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Expr::Call(path, method, argument) => {
                let value = path.lookup(item)?;
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("{path:?} is not text"))?;
                Ok(match method {
                    Method::Contains => text.contains(argument.as_str()),
                    Method::StartsWith => text.starts_with(argument.as_str()),
                    Method::EndsWith => text.ends_with(argument.as_str()),
                })
            }
            Expr::Compare(path, op, literal) => {
                let value = path.lookup(item)?;
                let ordering = match (value, literal) {
                    (Value::Null, Literal::Null) => Some(Ordering::Equal),
                    (_, Literal::Null) | (Value::Null, _) => None,
                    (Value::Number(n), Literal::Num(m)) => {
                        n.as_f64().and_then(|n| n.partial_cmp(m))
                    }
                    (Value::Number(n), Literal::Str(s)) => {
                        let m: f64 = s
                            .trim()
                            .parse()
                            .map_err(|_| format!("{path:?} is a number, {s:?} is not"))?;
                        n.as_f64().and_then(|n| n.partial_cmp(&m))
                    }
                    (Value::String(s), Literal::Str(t)) => Some(s.as_str().cmp(t.as_str())),
                    (Value::String(s), Literal::Num(m)) => {
                        s.trim().parse::<f64>().ok().and_then(|n| n.partial_cmp(m))
                    }
                    (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
                    _ => return Err(format!("{path:?} cannot be compared with {literal:?}")),
                };
                Ok(match (*op, ordering) {
                    ("==", o) => o == Some(Ordering::Equal),
                    ("!=", o) => o != Some(Ordering::Equal),
                    (_, None) => false,
                    ("<", Some(o)) => o == Ordering::Less,
                    ("<=", Some(o)) => o != Ordering::Greater,
                    (">", Some(o)) => o == Ordering::Greater,
                    (_, Some(o)) => o != Ordering::Less,
                })
            }
        }
    }
}

pub(crate) fn parse_order(text: &str) -> Result<Vec<(Path, bool)>, String> {
    text.split(',')
        .map(|key| {
            let mut words = key.split_whitespace();
            let name = words.next().ok_or("an empty sort key")?;
            if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(format!("{name:?} is not a property name"));
            }
            let descending = match words.next() {
                None => false,
                Some(d) if d.eq_ignore_ascii_case("asc") => false,
                Some(d) if d.eq_ignore_ascii_case("desc") => true,
                Some(other) => return Err(format!("{other:?} is neither asc nor desc")),
            };
            if let Some(extra) = words.next() {
                return Err(format!("unexpected {extra:?}"));
            }
            Ok((Path::Key(name.to_owned()), descending))
        })
        .collect()
}

pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(filter: &str, item: &Value) -> Result<bool, String> {
        parse_filter(filter)?.eval(item)
    }

    #[test]
    fn the_documented_filter_forms_evaluate() {
        let item = json!({"Name": "Newsletter 2024", "idList": 3, "Email": "a@b.c",
            "Fields": [{"Description": "FirstName", "Id": 1, "Value": "Ann"}]});
        for (filter, expected) in [
            ("Name.Contains('Newsletter')", true),
            ("Name.Contains('newsletter')", false),
            ("Name.StartsWith('News')", true),
            ("Name.EndsWith('2024')", true),
            ("Email=='a@b.c'", true),
            ("Email==\"a@b.c\"", true),
            ("Email!='a@b.c'", false),
            ("idList==3", true),
            ("idList=='3'", true),
            ("IdList > 2 && idList <= 3", true),
            ("idList<3 || Name.Contains('2024')", true),
            ("(idList<3 || idList>3) && Email=='a@b.c'", false),
            ("Fields['FirstName']=='Ann'", true),
        ] {
            assert_eq!(matches(filter, &item), Ok(expected), "{filter}");
        }
        for bad in [
            "Name.Like('x')",
            "Name ~ 'x'",
            "Name.Contains('x'",
            "Name==",
            "Nope=='x'",
            "Fields['Nope']=='x'",
            "Name.Contains(3)",
            "== 'x'",
            "Name=='x' extra",
        ] {
            assert!(matches(bad, &item).is_err(), "{bad}");
        }
    }

    #[test]
    fn order_keys_parse() {
        assert!(parse_order("idList desc").is_ok());
        assert!(parse_order("Name asc, idList DESC").is_ok());
        assert!(parse_order("idList sideways").is_err());
        assert!(parse_order("idList desc now").is_err());
        assert!(parse_order("Fields['x']").is_err());
    }
}
