//! Arguments of `auth_oauth2_token_require $var ... [error=CODE]` and what
//! counts as a satisfied requirement.

/// The variables (as written) and the status to refuse with.
#[derive(Debug, PartialEq, Eq)]
pub struct RequireArgs<'a> {
    pub variables: Vec<&'a [u8]>,
    pub status: u16,
}

/// Each error names the rule broken and the argument that broke it; the
/// glue puts the directive's name in front.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<RequireArgs<'a>, String> {
    let mut variables = Vec::new();
    let mut status: Option<(u16, &[u8])> = None;
    let shown = |arg: &[u8]| String::from_utf8_lossy(arg).into_owned();
    for arg in args {
        if let Some(code) = arg.strip_prefix(b"error=") {
            if let Some((_, first)) = status {
                return Err(format!(
                    "sets the error code twice (\"{}\" and \"{}\"): one error= per directive; put variables that need another code in a directive of their own",
                    shown(first),
                    shown(arg)
                ));
            }
            let code = super::parse_error_status(code).ok_or_else(|| {
                format!(
                    "has an invalid error code \"{}\": it must be 400-599, excluding 444 and 499",
                    shown(arg)
                )
            })?;
            status = Some((code, arg));
        } else if arg.first() == Some(&b'$') && arg.len() > 1 {
            variables.push(*arg);
        } else {
            return Err(format!(
                "takes variables (and error=code), not \"{}\"",
                shown(arg)
            ));
        }
    }
    if variables.is_empty() {
        return Err("needs at least one variable".into());
    }
    let status = status.map_or(401, |(code, _)| code);
    Ok(RequireArgs { variables, status })
}

/// The names of the variables `arg` refers to, as nginx's scripts read them:
/// `$name` (letters, digits, `_`) or `${name}`; `$1`..`$9` are regex captures,
/// not variables. Lowercased, as nginx keeps variable names.
pub fn variable_names(arg: &[u8]) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    let mut rest = arg;
    while let Some(at) = rest.iter().position(|&b| b == b'$') {
        rest = &rest[at + 1..];
        let name = match rest.first() {
            Some(b'0'..=b'9') => {
                rest = &rest[1..];
                continue;
            }
            Some(b'{') => {
                let Some(end) = rest.iter().position(|&b| b == b'}') else {
                    break;
                };
                let name = &rest[1..end];
                rest = &rest[end + 1..];
                name
            }
            _ => {
                let len = rest
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                let name = &rest[..len];
                rest = &rest[len..];
                name
            }
        };
        if !name.is_empty() {
            names.push(name.to_ascii_lowercase());
        }
    }
    names
}

/// Whether nginx knows the variable `name` (lowercase): one of the names
/// `defined` so far, or one that starts with a prefix of `prefixed`
/// (`http_`, `arg_`, `cookie_`...), as nginx resolves them.
pub fn is_defined(name: &[u8], defined: &[&[u8]], prefixed: &[&[u8]]) -> bool {
    defined.contains(&name) || prefixed.iter().any(|p| name.starts_with(p))
}

/// A requirement holds when its value is neither empty nor "0".
pub fn is_satisfied(value: &[u8]) -> bool {
    !value.is_empty() && value != b"0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_default_status() {
        let a = parse(&[b"$a", b"$b"]).unwrap();
        assert_eq!(
            a,
            RequireArgs {
                variables: vec![b"$a", b"$b"],
                status: 401
            }
        );
    }

    #[test]
    fn error_code_anywhere() {
        assert_eq!(parse(&[b"$a", b"error=403"]).unwrap().status, 403);
        assert_eq!(parse(&[b"error=418", b"$a"]).unwrap().status, 418);
    }

    #[test]
    fn error_codes_are_checked() {
        for bad in [
            &b"error=200"[..],
            b"error=600",
            b"error=444",
            b"error=499",
            b"error=x",
            b"error=",
        ] {
            let err = parse(&[b"$a", bad]).unwrap_err();
            let shown = String::from_utf8_lossy(bad);
            assert_eq!(
                err,
                format!("has an invalid error code \"{shown}\": it must be 400-599, excluding 444 and 499")
            );
        }
    }

    #[test]
    fn one_error_code_per_directive() {
        let err = parse(&[b"$a", b"error=403", b"error=401"]).unwrap_err();
        assert!(
            err.starts_with("sets the error code twice (\"error=403\" and \"error=401\")"),
            "{err}"
        );
        // Even twice the same: the second says nothing the first did not.
        assert!(parse(&[b"error=403", b"$a", b"error=403"]).is_err());
    }

    #[test]
    fn needs_a_variable() {
        assert!(parse(&[b"error=403"])
            .unwrap_err()
            .contains("at least one variable"));
        assert!(parse(&[b"literal"])
            .unwrap_err()
            .contains("takes variables"));
        assert!(parse(&[b"$"]).is_err());
    }

    #[test]
    fn names_of_the_variables_an_argument_refers_to() {
        let names = |arg: &[u8]| -> Vec<String> {
            variable_names(arg)
                .into_iter()
                .map(|n| String::from_utf8(n).unwrap())
                .collect()
        };
        assert_eq!(names(b"$tenant_ok"), ["tenant_ok"]);
        assert_eq!(names(b"$a$B_2"), ["a", "b_2"]);
        assert_eq!(names(b"${aud}ok:$http_x_y-$1"), ["aud", "http_x_y"]);
        assert_eq!(names(b"$"), Vec::<String>::new());
        assert_eq!(names(b"${open"), Vec::<String>::new());
    }

    #[test]
    fn defined_by_name_or_by_prefix() {
        let defined: &[&[u8]] = &[b"tenant_ok", b"oauth2_token_sub"];
        let prefixed: &[&[u8]] = &[b"http_", b"arg_"];
        assert!(is_defined(b"tenant_ok", defined, prefixed));
        assert!(is_defined(b"http_x_ok", defined, prefixed));
        assert!(is_defined(b"arg_a", defined, prefixed));
        assert!(!is_defined(b"tenant_okk", defined, prefixed));
        assert!(!is_defined(b"http", defined, prefixed));
    }

    #[test]
    fn truthiness() {
        assert!(is_satisfied(b"1"));
        assert!(is_satisfied(b"yes"));
        assert!(is_satisfied(b"00"));
        assert!(!is_satisfied(b"0"));
        assert!(!is_satisfied(b""));
    }
}
