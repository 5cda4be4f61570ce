# Ed25519 verification (twomes/update/ed25519.py) on both runtimes: the RFC 8032 section 7.1 test
# vectors, tampered messages, signatures and keys, and malformed input (lengths, S >= L, points that
# are not on the curve or not canonically encoded). SHA-512 is checked against FIPS 180-4 digests.
from binascii import unhexlify

import edsign

from twomes.update import ed25519

_M1024 = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1e355"
    "f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d658675fc"
    "6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b"
    "199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e06203b33890cc9b8"
    "32f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d"
    "206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed185ce81bd84359d44254d9562"
    "9e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40"
    "cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f27088d78b7e883c8759d2c4f5c65adb7553"
    "878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b0707e0"
    "917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128bab27af87a71314f318c782b23ebfe808b82b0ce26"
    "401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429ec96031dbcad3"
    "dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb751fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301"
    "651339e22904cc8c42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f"
    "92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34dff7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401ade"
    "bf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab4"
    "7b57f7f7276cd419c17a3ca8e1b939ae49e488acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
    "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb37"
    "97aa2a2f256656168e6c496afc5fb93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba7"
    "7c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315c"
    "f4fde7cb68606937380db2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef"
    "68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0"
)

# name, secret key (seed), public key, message, signature (RFC 8032 7.1)
_VECTORS = (
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST 1024",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        _M1024,
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
)

_L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED
_P = 2**255 - 19


def _h(s):
    return unhexlify(s)


def _vec(i):
    _, _, pk, msg, sig = _VECTORS[i]
    return _h(pk), _h(msg), _h(sig)


def _flip(b, i, bit=1):
    b = bytearray(b)
    b[i] ^= bit
    return bytes(b)


def test_rfc8032_vectors_verify():
    for name, _, pk, msg, sig in _VECTORS:
        assert ed25519.verify(_h(pk), _h(msg), _h(sig)), name
    assert len(_h(_M1024)) == 1023


def test_bytearray_and_memoryview_inputs():
    pk, msg, sig = _vec(2)
    assert ed25519.verify(bytearray(pk), memoryview(msg), bytearray(sig))


def test_tampered_message_fails():
    for i in range(len(_VECTORS)):
        pk, msg, sig = _vec(i)
        assert not ed25519.verify(pk, msg + b"\x00", sig), i
        if msg:
            assert not ed25519.verify(pk, _flip(msg, 0), sig), i
            assert not ed25519.verify(pk, msg[:-1], sig), i
    pk, msg, sig = _vec(3)
    assert not ed25519.verify(pk, _flip(msg, 1022, 0x80), sig)


def test_tampered_signature_fails():
    pk, msg, sig = _vec(1)
    for i in (0, 5, 31, 32, 40, 63):
        for bit in (1, 0x80):
            assert not ed25519.verify(pk, msg, _flip(sig, i, bit)), (i, bit)
    assert not ed25519.verify(pk, msg, sig[32:] + sig[:32])
    assert not ed25519.verify(pk, msg, bytes(64))


def test_other_key_fails():
    for i in range(len(_VECTORS)):
        pk, msg, sig = _vec(i)
        other = _vec((i + 1) % len(_VECTORS))[0]
        assert not ed25519.verify(other, msg, sig), i
        assert not ed25519.verify(_flip(pk, 3), msg, sig), i


def test_wrong_lengths_fail():
    pk, msg, sig = _vec(0)
    for bad in (b"", sig[:63], sig + b"\x00", sig + sig):
        assert not ed25519.verify(pk, msg, bad), len(bad)
    for bad in (b"", pk[:31], pk + b"\x00"):
        assert not ed25519.verify(bad, msg, sig), len(bad)


def test_non_canonical_s_is_refused():
    # S + L is the same scalar modulo L: a malleable copy of a valid signature that must not verify
    for i in range(len(_VECTORS)):
        pk, msg, sig = _vec(i)
        s = int.from_bytes(sig[32:], "little")
        assert s < _L
        assert not ed25519.verify(pk, msg, sig[:32] + (s + _L).to_bytes(32, "little")), i
    pk, msg, sig = _vec(0)
    assert not ed25519.verify(pk, msg, sig[:32] + _L.to_bytes(32, "little"))
    assert not ed25519.verify(pk, msg, sig[:32] + b"\xff" * 32)


def test_keys_not_on_the_curve_or_not_canonical_are_refused():
    _, msg, sig = _vec(0)
    off_curve = (2).to_bytes(32, "little")  # y = 2: (y^2 - 1)/(d y^2 + 1) has no square root
    non_canonical = _P.to_bytes(32, "little")  # y = p encodes y = 0 a second time
    zero_x_with_sign = (1 + (1 << 255)).to_bytes(32, "little")  # y = 1 has x = 0: sign bit must be 0
    for key in (off_curve, non_canonical, zero_x_with_sign, b"\xff" * 32):
        assert ed25519._decode(key) is None, key  # (the verifier's decoding: refused as a point)
        assert not ed25519.verify(key, msg, sig), key
    for i in range(len(_VECTORS)):
        assert ed25519._decode(_vec(i)[0]) is not None
    assert not ed25519.verify(_vec(0)[0][:31], msg, sig)


def test_r_not_a_point_fails():
    pk, msg, sig = _vec(0)
    assert not ed25519.verify(pk, msg, (2).to_bytes(32, "little") + sig[32:])
    assert not ed25519.verify(pk, msg, _P.to_bytes(32, "little") + sig[32:])


def test_sha512_pure_matches_fips_digests():
    cases = (
        (
            b"",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        ),
        (
            b"abc",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
            b"lmnopqrsmnopqrstnopqrstu",
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
            "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
        ),
        (
            b"a" * 111,
            "fa9121c7b32b9e01733d034cfc78cbf67f926c7ed83e82200ef86818196921760"
            "b4beff48404df811b953828274461673c68d04e297b0eb7b2b4d60fc6b566a2",
        ),
        (
            b"a" * 112,
            "c01d080efd492776a1c43bd23dd99d0a2e626d481e16782e75d54c2503b5dc32"
            "bd05f0f1ba33e568b88fd2d970929b719ecbb152f58f130a407c8830604b70ca",
        ),
        (
            b"a" * 128,
            "b73d1929aa615934e61a871596b3f3b33359f42b8175602e89f7e06e5f658a24"
            "3667807ed300314b95cacdd579f3e33abdfbe351909519a846d465c59582f321",
        ),
    )
    for data, digest in cases:
        assert ed25519.sha512_pure(data) == _h(digest), len(data)
        assert ed25519.sha512(data) == _h(digest), len(data)


def test_sha512_of_parts_is_the_sha512_of_their_bytes():
    # the verifier hashes R, A and the message as parts (never joined: docs/heap.md); parts that end
    # inside a block, on its edge and empty ones
    data = bytes(range(256)) * 2
    for cut in ((), (0,), (32, 64), (64, 128, 128), (1, 127, 255, 300), (111, 112, 113)):
        parts, at = [], 0
        for c in cut:
            parts.append(data[at:c])
            at = c
        parts.append(bytearray(data[at:]))
        assert ed25519.sha512_pure(*parts) == ed25519.sha512(*parts) == ed25519.sha512(data), cut


def test_the_test_signer_reproduces_rfc8032():
    # edsign (the tests' signer) must give the RFC's public keys and signatures before other tests trust it
    for name, seed, pk, msg, sig in _VECTORS[:3] + _VECTORS[4:]:
        assert edsign.public_key(_h(seed)) == _h(pk), name
        assert edsign.sign(_h(seed), _h(msg)) == _h(sig), name
