//! Tensor shapes: a list of dimensions, outermost first.

use std::fmt;

/// The dimensions of a tensor, outermost first (row-major, contiguous).
///
/// ```
/// use mixtral_tensor::Shape;
/// let s = Shape::from([14336, 4096]);
/// assert_eq!(s.numel(), 14336 * 4096);
/// assert_eq!(s.to_string(), "[14336, 4096]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: Vec<usize>) -> Shape {
        Shape(dims)
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements, or `None` if it overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Number of elements (the product of the dimensions).
    ///
    /// Shapes built by this crate from files are checked not to overflow.
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Shape {
        Shape(dims.to_vec())
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Shape {
        Shape(dims.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(dims: Vec<usize>) -> Shape {
        Shape(dims)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_shape_has_one_element() {
        assert_eq!(Shape::from([]).numel(), 1);
        assert_eq!(Shape::from([]).to_string(), "[]");
    }

    #[test]
    fn overflow_is_detected() {
        assert_eq!(Shape::from([usize::MAX, 2]).checked_numel(), None);
    }
}
