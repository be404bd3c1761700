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
    fn truthiness() {
        assert!(is_satisfied(b"1"));
        assert!(is_satisfied(b"yes"));
        assert!(is_satisfied(b"00"));
        assert!(!is_satisfied(b"0"));
        assert!(!is_satisfied(b""));
    }
}
