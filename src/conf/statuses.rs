//! `auth_oauth2_token_status`: the status a location answers with, per
//! situation (a missing token, a refused one, a forbidden one, an IdP that
//! failed or did not answer in time), inherited situation by situation.

/// The situations whose status `auth_oauth2_token_status` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Situation {
    /// No token in the request (401).
    Missing,
    /// A malformed, inactive or refused token (401; 400 for a malformed request).
    Invalid,
    /// A valid token without a required scope or claim (403).
    Forbidden,
    /// The IdP failed or answered something unusable (502, or 503 when it said so).
    IdpError,
    /// The IdP did not answer in time (504).
    IdpTimeout,
}

impl Situation {
    pub const ALL: [Situation; 5] = [
        Situation::Missing,
        Situation::Invalid,
        Situation::Forbidden,
        Situation::IdpError,
        Situation::IdpTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Situation::Missing => "missing",
            Situation::Invalid => "invalid",
            Situation::Forbidden => "forbidden",
            Situation::IdpError => "idp_error",
            Situation::IdpTimeout => "idp_timeout",
        }
    }

    pub fn parse(name: &[u8]) -> Option<Situation> {
        Situation::ALL
            .into_iter()
            .find(|s| s.name().as_bytes() == name)
    }
}

/// The statuses a block sets with `auth_oauth2_token_status`, per situation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Statuses([Option<u16>; 5]);

impl Statuses {
    pub fn get(&self, situation: Situation) -> Option<u16> {
        self.0[situation as usize]
    }

    pub fn set(&mut self, situation: Situation, status: u16) -> Result<(), String> {
        let slot = &mut self.0[situation as usize];
        if slot.is_some() {
            return Err(format!("sets \"{}\" twice", situation.name()));
        }
        *slot = Some(status);
        Ok(())
    }

    /// Each situation not set here takes the enclosing block's status.
    pub(super) fn inherit(&mut self, prev: &Statuses) {
        for (own, outer) in self.0.iter_mut().zip(prev.0) {
            if own.is_none() {
                *own = outer;
            }
        }
    }
}

/// An error status an operator may configure: 400-599, except nginx's
/// special 444 (close the connection) and 499 (client closed).
pub fn parse_error_status(text: &[u8]) -> Option<u16> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (400..=599).contains(c) && *c != 444 && *c != 499)
}
