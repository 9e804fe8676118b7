//! A small arithmetic evaluator: numbers, + - * /, unary minus, parentheses.

/// Evaluates the first arithmetic expression found in `text`, so that
/// "What is 12*(3+4)?" evaluates `12*(3+4)`.
pub fn evaluate_in(text: &str) -> Result<f64, String> {
    let is_arith = |c: char| c.is_ascii_digit() || "+-*/(). ".contains(c);
    let expr = text
        .split(|c: char| !is_arith(c))
        .map(str::trim)
        .filter(|run| run.chars().any(|c| c.is_ascii_digit()))
        .max_by_key(|run| run.len())
        .ok_or("no arithmetic expression found")?;
    evaluate(expr)
}

/// Evaluates `expr` exactly; anything but arithmetic is an error.
pub fn evaluate(expr: &str) -> Result<f64, String> {
    let tokens: Vec<char> = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let mut parser = Parser { tokens, at: 0 };
    let value = parser.sum()?;
    if parser.at != parser.tokens.len() {
        return Err(format!("unexpected `{}`", parser.tokens[parser.at]));
    }
    Ok(value)
}

/// Formats a result without a trailing `.0` for whole numbers.
pub fn format(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

struct Parser {
    tokens: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.tokens.get(self.at).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.unary()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.at += 1;
            let rhs = self.unary()?;
            if op == '/' && rhs == 0.0 {
                return Err("division by zero".into());
            }
            value = if op == '*' { value * rhs } else { value / rhs };
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<f64, String> {
        if self.peek() == Some('-') {
            self.at += 1;
            return Ok(-self.unary()?);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let value = self.sum()?;
                if self.peek() != Some(')') {
                    return Err("missing `)`".into());
                }
                self.at += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.at;
                while matches!(self.peek(), Some(c) if c.is_ascii_digit() || c == '.') {
                    self.at += 1;
                }
                let digits: String = self.tokens[start..self.at].iter().collect();
                digits.parse().map_err(|_| format!("bad number `{digits}`"))
            }
            Some(c) => Err(format!("unexpected `{c}`")),
            None => Err("expression ends too early".into()),
        }
    }
}
