//! [`code_enum!`]: the enums whose values cross the kernel/user boundary
//! (map keys, record kinds, counter slots) as integers, declared once with
//! their value and display name, and given `ALL`, `COUNT` and `from_u32`
//! (and on the user side `name()`, how views and JSON spell them).

/// Declares a `#[repr]` enum of explicit values with `ALL` (in declaration
/// order), `COUNT`, `from_u32` and, with the `user` feature, `name()`.
#[macro_export]
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $value:literal => $display:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [Self; Self::COUNT] = [$(Self::$variant),+];
            /// How many values there are.
            pub const COUNT: usize = [$($value),+].len();

            /// The value whose integer is `value`.
            #[must_use]
            pub const fn from_u32(value: u32) -> Option<Self> {
                $(
                    if value == $value {
                        return Some(Self::$variant);
                    }
                )+
                None
            }

            /// How views and JSON name the value.
            #[cfg(feature = "user")]
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $display,)+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::code_enum! {
        /// A test enum.
        enum Sample: u32 {
            /// First.
            One = 0 => "one",
            Three = 2 => "three",
        }
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(Sample::COUNT, 2);
        assert_eq!(Sample::ALL, [Sample::One, Sample::Three]);
        assert_eq!(Sample::from_u32(2), Some(Sample::Three));
        assert_eq!(Sample::from_u32(1), None);
        assert_eq!(Sample::Three as u32, 2);
        #[cfg(feature = "user")]
        assert_eq!(Sample::Three.name(), "three");
    }
}
