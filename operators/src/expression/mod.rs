//! The expression language of job files: conditions of `filter`, computed fields of `map` and
//! `project`, keys of `key-by` (and, later, window keys, aggregate arguments, join keys and
//! alert rules).
//!
//! An expression is parsed, type-checked against the schema of the rows it reads, and compiled
//! once into a tree of closures ([`compile`]); evaluating it ([`Compiled::eval`]) reads fields
//! by index and never looks anything up by name. The full reference is `docs/expressions.md`.
//!
//! * **Literals**: `123`, `1.5`, `2e3`, `'text'` or `"text"` (a doubled quote is a quote),
//!   `true`, `false`, `null`; durations `500ms`, `30s`, `5m`, `2h`, `1d` are integer
//!   milliseconds.
//! * **Fields**: `hr`, or `` `any name` `` in backquotes.
//! * **Operators**, lowest precedence first: `if c then a else b` and
//!   `case when c then a … [else b] end`; `or`; `and`; `not`; comparisons `= == != <> < <= > >=`,
//!   `is [not] null`, `[not] in (…)`, `[not] between a and b`; `||` (concatenation); `+ -`;
//!   `* / %`; unary `-`; `x::type`.
//! * **Types**: boolean, integer, float, string, timestamp. Integers become floats where a
//!   float is needed. Integer `/` truncates toward zero. `timestamp ± integer` (ms) is a
//!   timestamp; `timestamp − timestamp` is integer milliseconds. Comparing incompatible types (a
//!   string with a number) is an error found when the job is validated.
//! * **Nulls** (as in SQL): arithmetic, comparisons and functions of null are null; `and` / `or`
//!   are three-valued; `if` with a null condition takes the `else` branch; a filter keeps a
//!   row only when its condition is true.
//! * **Errors while evaluating** (division by zero, integer overflow, a failed `cast`) send the
//!   row to the node's dead-letter output; `try_cast` gives null instead of failing.

mod compile;
mod functions;
mod lexer;
mod news2;
mod parser;

#[cfg(test)]
mod tests;

use std::ops::Range;

use thiserror::Error;
use vitalflow_model::row::{Schema, Type, Value};

pub use compile::edit_distance;
pub use parser::{Ast, AstKind, BinOp, parse};

/// A problem in an expression, at a byte range of its text.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ExprError {
    /// Where, in bytes of the expression's text.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
}

impl ExprError {
    pub(crate) const fn new(span: Range<usize>, message: String) -> Self {
        Self { span, message }
    }
}

/// An expression that failed on a row. The message never holds a value of the row.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct EvalError {
    /// What went wrong.
    pub message: String,
}

impl EvalError {
    pub(crate) const fn new(message: String) -> Self {
        Self { message }
    }
}

/// A compiled expression, ready to evaluate on rows of the schema it was compiled for.
pub struct Compiled {
    ty: Option<Type>,
    nullable: bool,
    fields: Vec<usize>,
    eval: compile::Eval,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("ty", &self.ty)
            .field("nullable", &self.nullable)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

/// Parses, type-checks and compiles `source` for rows of `schema`.
///
/// # Errors
/// The syntax error, or every type error, each at its place in `source`.
pub fn compile(source: &str, schema: &Schema) -> Result<Compiled, Vec<ExprError>> {
    let ast = parse(source).map_err(|e| vec![e])?;
    let mut ctx = compile::Ctx {
        schema,
        errors: Vec::new(),
        fields: Default::default(),
    };
    let typed = ctx.compile(&ast);
    if !ctx.errors.is_empty() {
        return Err(ctx.errors);
    }
    Ok(Compiled {
        ty: typed.ty,
        nullable: typed.nullable,
        fields: ctx.fields.into_iter().collect(),
        eval: typed.eval,
    })
}

impl Compiled {
    /// The result type (`None` only for the bare `null` literal).
    #[must_use]
    pub const fn ty(&self) -> Option<Type> {
        self.ty
    }

    /// Whether the result may be null.
    #[must_use]
    pub const fn nullable(&self) -> bool {
        self.nullable
    }

    /// The schema indexes of the fields the expression reads, sorted.
    #[must_use]
    pub fn fields(&self) -> &[usize] {
        &self.fields
    }

    /// Evaluates on a row's values.
    ///
    /// # Errors
    /// Division by zero, integer overflow, a failed cast.
    pub fn eval(&self, row: &[Value]) -> Result<Value, EvalError> {
        (self.eval)(row)
    }

    /// Evaluates a condition: true only for `true` (false and null are false).
    ///
    /// # Errors
    /// As [`Self::eval`].
    pub fn eval_bool(&self, row: &[Value]) -> Result<bool, EvalError> {
        Ok(matches!((self.eval)(row)?, Value::Bool(true)))
    }
}
