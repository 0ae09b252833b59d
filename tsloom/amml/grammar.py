r"""The AMML grammar (Lark, LALR(1)).

A program is one statement per line::

    raw  = source id="ett" | minmax_scaler           # a named flow
    hot  = raw | filter cond=val1 > 1                # reads flow `raw`
    raw | split a b                                  # fans `raw` out to new flows a, b
    both = join a b on=ts tolerance="5min"           # merges flows on time
    both | print                                     # an unnamed (terminal) pipeline

* A pipeline is components joined by `|`; a line may end with `|` or the next line may start
  with `|` to continue it (comment lines in between are fine). Newlines inside `( )` and `[ ]`
  are ignored, and a trailing backslash joins two lines.
* A component is a name followed by items separated by spaces or commas: `key=value` arguments
  and bare names (flow names, used by `join` and `split`).
* A value is a string ("…" or '…'), a number, `true`/`false`/`null`, a list `[…]`, or an
  expression (a *callback script*), e.g. `filter cond=val1 > 1 and not is_null(val2)`.
  An unquoted value extends as far as it still parses as one expression: it stops at a
  top-level `,`, `|`, newline, or at the next `name=` (a name followed by a single `=`).
  So `key=a > 1, other=2` and `key=a > 1 other=2` both mean key=(a > 1), other=2; commas inside
  `( )` or `[ ]` belong to the expression. Comparisons do not chain (`a < b < c` is an error).
* `#` starts a comment that runs to the end of the line.
"""

GRAMMAR = r"""
start: _NL* (statement (_NL+ statement)* _NL*)?

callback: _NL* expr _NL*

statement: NAME EQ pipeline  -> assignment
         | pipeline          -> bare

pipeline: stage (PIPE stage)*

stage: NAME (COMMA? item)*

?item: NAME EQ expr          -> arg
     | NAME                  -> positional

?expr: or_test
?or_test: or_test OR and_test        -> boolop
        | and_test
?and_test: and_test AND not_test     -> boolop
         | not_test
?not_test: NOT not_test              -> unary
         | comparison
?comparison: arith COMP_OP arith     -> binop
           | arith
?arith: arith ADD_OP term            -> binop
      | term
?term: term MUL_OP factor            -> binop
     | factor
?factor: ADD_OP factor               -> unary
       | postfix
?postfix: postfix DOT NAME           -> attr
        | postfix LSQB expr RSQB     -> index
        | NAME LPAR [expr (COMMA expr)*] RPAR -> call
        | atom
?atom: NUMBER                        -> number
     | STRING                        -> string
     | TRUE                          -> true
     | FALSE                         -> false
     | NULL                          -> null
     | NAME                          -> name
     | LPAR expr RPAR                -> paren
     | LSQB [expr (COMMA expr)*] RSQB -> list

TRUE: "true"
FALSE: "false"
NULL: "null"
AND: "and"
OR: "or"
NOT: "not"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"([^"\\\n]|\\.)*"/ | /'([^'\\\n]|\\.)*'/
COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
EQ: "="
ADD_OP: "+" | "-"
MUL_OP: "*" | "/"
COMMA: ","
DOT: "."
LPAR: "("
RPAR: ")"
LSQB: "["
RSQB: "]"
PIPE.2: /(\n([ \t\f\r]*(#[^\n]*)?\n)*[ \t\f\r]*)?\|([ \t\f\r]*(#[^\n]*)?\n)*/
_NL: /\n/

COMMENT: /#[^\n]*/
WS: /[ \t\f\r]+/
CONTINUATION: /\\[ \t\f\r]*\n/
%ignore COMMENT
%ignore WS
%ignore CONTINUATION
"""

# Human names of the terminals, for "expected …" in syntax errors.
TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "TRUE": "`true`",
    "FALSE": "`false`",
    "NULL": "`null`",
    "AND": "`and`",
    "OR": "`or`",
    "NOT": "`not`",
    "COMP_OP": "a comparison",
    "EQ": "`=`",
    "ADD_OP": "`+`/`-`",
    "MUL_OP": "`*`/`/`",
    "COMMA": "`,`",
    "DOT": "`.`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "PIPE": "`|`",
    "_NL": "a new line",
    "$END": "the end of the program",
}
