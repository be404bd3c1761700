//! Arguments of `auth_oauth2_token_require $var ... [error=CODE]` and what
//! counts as a satisfied requirement.

/// The variables (as written) and the status to refuse with.
#[derive(Debug, PartialEq, Eq)]
pub struct RequireArgs<'a> {
    pub variables: Vec<&'a [u8]>,
    pub status: u16,
}

pub fn parse<'a>(args: &[&'a [u8]]) -> Result<RequireArgs<'a>, String> {
    let mut variables = Vec::new();
    let mut status = 401;
    for arg in args {
        if let Some(code) = arg.strip_prefix(b"error=") {
            status = super::parse_error_status(code)
                .ok_or("has an invalid error code: it must be 400-599, excluding 444 and 499")?;
        } else if arg.first() == Some(&b'$') && arg.len() > 1 {
            variables.push(*arg);
        } else {
            return Err(format!(
                "takes variables, not \"{}\"",
                String::from_utf8_lossy(arg)
            ));
        }
    }
    if variables.is_empty() {
        return Err("needs at least one variable".into());
    }
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
            assert!(
                parse(&[b"$a", bad]).unwrap_err().contains("400-599"),
                "{:?}",
                bad
            );
        }
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
