//! The payment providers a gateway can name in its `ProviderType`.

use crate::picklist::text_enum;

text_enum! {
    /// `PaymentGateway.ProviderType`: which adapter asks for a gateway's refunds.
    pub enum ProviderType ("payment provider type") {
        /// The built-in simulator (also `refunds simulator` over HTTP).
        Simulator => "Simulator",
        Stripe => "Stripe",
        Adyen => "Adyen",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_types_read_back_exactly() {
        for &p in ProviderType::ALL {
            assert_eq!(p.as_str().parse::<ProviderType>(), Ok(p));
        }
        for bad in ["stripe", "PayPal", ""] {
            assert!(bad.parse::<ProviderType>().is_err(), "{bad}");
        }
    }
}
