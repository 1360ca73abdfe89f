//! The payment providers a gateway can name in its `ProviderType`, and whether a gateway
//! may be used.

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

text_enum! {
    /// `PaymentGateway.Status`: an `Inactive` gateway's refunds fail without a call.
    pub enum GatewayStatus ("payment gateway status") {
        Active => "Active",
        Inactive => "Inactive",
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
        for &s in GatewayStatus::ALL {
            assert_eq!(s.as_str().parse::<GatewayStatus>(), Ok(s));
        }
        assert!("active".parse::<GatewayStatus>().is_err());
    }
}
